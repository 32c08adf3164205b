#!/usr/bin/env bash
# The cost of a C publish of a 3-float pose from a plain thread, beside the
# Rust publish of the same event, in one run: both alternate against the
# same sink (the repository's server, `vuer-client serve`), default and
# real-time mode; medians of the rounds, then of the runs.
#
#   capi/bench/run.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}
cargo build -q --release -p vuer-client-cli -p vuer-client-c
cargo build -q --release -p vuer-client-c --examples
cc -O2 -std=c11 -Icapi/include capi/bench/publish.c target/release/libvuer_client_c.a \
  -lpthread -ldl -lm -o target/release/publish_c
target/release/vuer-client serve --port 0 --no-scene > target/release/bench-sink.log 2>&1 &
sink=$!
trap 'kill $sink' EXIT
for _ in $(seq 50); do grep -q listening target/release/bench-sink.log && break; sleep 0.1; done
uri=$(grep -o 'ws://[^ ]*' target/release/bench-sink.log | head -1)
for mode in 0 1; do
  c=(); r=()
  for _ in $(seq "$runs"); do
    c+=("$(target/release/publish_c "$uri" 9 $mode)")
    r+=("$(target/release/examples/publish_rust "$uri" 9 $mode)")
  done
  label=$([ $mode = 1 ] && echo "realtime_publish" || echo "default")
  echo "$label: C vuer_publish_floats ns/call ${c[*]}  |  Rust publish(EventRef) ns/call ${r[*]}"
done
