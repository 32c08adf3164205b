#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this script):
#   - a Python virtualenv with vuer 0.1.6 (the real server the interop tests
#     talk to), created in .venv when missing;
#   - Chromium for the browser test (apt-get install -y chromium when
#     missing);
#   - format check, clippy with -D warnings (the workspace: library, CLI,
#     test kit; and the library alone, as users build it);
#   - every test: unit, integration (in-process server), interop (real
#     Python server), CLI, doctests;
#   - every bench compiled and run once, briefly, so they cannot rot
#     (`cargo bench` alone runs them for real; see BENCHMARKS.md);
#   - the C API (capi/): its header checked against the code, the C and
#     C++ examples built with cc/c++ and run against the embedded and the
#     real server, the C one under valgrind (cargo test runs them);
#   - the Python package (python/): `pip install ./python` into .venv
#     (maturin comes from PyPI), its pytest suite against the real vuer
#     server, a fresh virtualenv without vuer, and its bench, briefly.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! .venv/bin/python -c "import importlib.metadata as m; assert m.version('vuer') == '0.1.6'" 2>/dev/null; then
  echo "== creating .venv with vuer==0.1.6"
  python3 -m venv .venv
  .venv/bin/pip install --quiet vuer==0.1.6
fi

# The browser test (tests/browser.rs) needs Chromium: Debian's package when
# missing (CHROMIUM=/path/to/chrome uses another). No silent skip.
if [ -z "${CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1 \
   && ! command -v chromium-browser >/dev/null 2>&1 && ! command -v google-chrome >/dev/null 2>&1; then
  echo "== installing chromium (for tests/browser.rs)"
  if command -v apt-get >/dev/null 2>&1; then
    { DEBIAN_FRONTEND=noninteractive apt-get install -y chromium \
      || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }; } >/dev/null 2>&1 || true
  fi
  if ! command -v chromium >/dev/null 2>&1; then
    echo "error: no Chromium, and it could not be installed (apt-get install -y chromium, as root);" >&2
    echo "       the browser test needs one: install it or set CHROMIUM=/path/to/chrome" >&2
    exit 1
  fi
fi

# The C API's tests (capi/tests/examples.rs) run the C example under
# valgrind: Debian's package when missing.
if ! command -v valgrind >/dev/null 2>&1; then
  echo "== installing valgrind (for capi/tests/examples.rs)"
  { DEBIAN_FRONTEND=noninteractive apt-get install -y valgrind \
    || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y valgrind; }; } >/dev/null 2>&1 || true
  command -v valgrind >/dev/null 2>&1 || { echo "error: valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (the library, the CLI and the test kit)"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test (the library, the CLI and the test kit)"
cargo test --workspace
echo "== the library alone (no test kit, no internals): builds and lints"
cargo clippy -p vuer-client --lib -- -D warnings
echo "== cargo doc (no broken links in the library's and the test kit's docs)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p vuer-client -p vuer-client-testkit
echo "== cargo bench -- --test (every bench compiled and run once, briefly)"
cargo bench --workspace -- --test
echo "== the Python package: pip install ./python, pytest against the real vuer 0.1.6 server"
.venv/bin/pip install --quiet pytest pytest-timeout
.venv/bin/pip install --quiet ./python
.venv/bin/python -m pytest -q python/tests
echo "== the Python package in a fresh virtualenv, without vuer"
rm -rf target/py-fresh
python3 -m venv target/py-fresh
target/py-fresh/bin/pip install --quiet ./python
target/py-fresh/bin/python python/tests/fresh_smoke.py target/debug/vuer-client
echo "== the Python send bench, once, briefly (python python/bench/bench_send.py runs it for real)"
OPENBLAS_NUM_THREADS=1 .venv/bin/python python/bench/bench_send.py --quick
echo "== all checks passed"
