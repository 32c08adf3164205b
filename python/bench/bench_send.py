"""From Python: events/s and CPU µs per event of vuer.VuerClient's
`await client.send(e)` beside this package's `await client.send(e)`,
`client.send @ e`, `client.publish(e)` (latest value wins per key, the
default) and `client.publish(e, reliable=True)`, on the same sink, in one
run, in interleaved rounds.

    python python/bench/bench_send.py                 # 5 rounds, ~1 s per case
    python python/bench/bench_send.py --quick         # a smoke run (CI)

The sink is this repository's Rust server (`vuer-client serve --port 0
--no-scene`, release build if present): it reads every frame and answers
nothing, so both clients are measured against the same, fast reader.
CPU is the process's (time.process_time: every thread, the Rust client's
included) over the sending loop and, for vuer_client, the flush that ends
when every event is written. Events are made before the clock starts (a
`SetPositionEvent(value=[x, y, z])` per event, 1000 distinct, cycled).
"""

import os

# vuer imports numpy, whose OpenBLAS threads spin on idle cores (7 % of the
# samples in a perf profile of this bench): one thread, for both clients.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from vuer.client import VuerClient as VuerVuerClient
from vuer.events import ClientEvent

import vuer_client

ROOT = Path(__file__).resolve().parents[2]


class SetPositionEvent(ClientEvent):
    etype = "SET_POSITION"


def start_sink():
    for build in ("release", "debug"):
        exe = ROOT / "target" / build / "vuer-client"
        if exe.exists():
            break
    else:
        sys.exit("build the sink first: cargo build --release -p vuer-client-cli")
    proc = subprocess.Popen(
        [str(exe), "serve", "--port", "0", "--no-scene"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    for line in proc.stdout:
        m = re.search(r"listening on (ws://\S+)", line)
        if m:
            return proc, m.group(1), build
    sys.exit("the sink did not start")


def events(n=1000):
    return [SetPositionEvent(value=[i * 0.001, 0.5, -i * 0.001]) for i in range(n)]


async def case_vuer(uri, evs, n):
    async with VuerVuerClient(uri) as c:
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            await c.send(evs[i % len(evs)])
        return time.perf_counter() - t0, time.process_time() - c0


async def case_ours(uri, evs, n, how):
    async with vuer_client.VuerClient(uri, max_queued_events=1 << 20) as c:
        send, publish = c.send, c.publish
        t0, c0 = time.perf_counter(), time.process_time()
        if how == "send":
            for i in range(n):
                await send(evs[i % len(evs)])
        elif how == "send @":
            for i in range(n):
                send @ evs[i % len(evs)]
        elif how == "publish":
            for i in range(n):
                publish(evs[i % len(evs)])
        elif how == "publish reliable":
            for i in range(n):
                publish(evs[i % len(evs)], True)
        await c.flush()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        s = c.stats()
        assert s["send_at_errors"] == 0, s
        return wall, cpu


CASES = ["vuer send", "send", "send @", "publish", "publish reliable"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0, help="target time per case per round")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="write the medians here")
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.seconds = 1, 0.05
    sink, uri, build = start_sink()
    evs = events()
    # First guesses of the rates, to size each case to about --seconds.
    rate = {"vuer send": 40e3, "send": 1e6, "send @": 1e6, "publish": 2e6, "publish reliable": 1.5e6}
    results = {c: [] for c in CASES}
    try:
        for r in range(a.rounds):
            for case in CASES:
                n = max(1000, int(rate[case] * a.seconds))
                if case == "vuer send":
                    wall, cpu = asyncio.run(case_vuer(uri, evs, n))
                else:
                    wall, cpu = asyncio.run(case_ours(uri, evs, n, case))
                rate[case] = n / wall
                results[case].append((n / wall, cpu / n * 1e6))
    finally:
        sink.kill()
    med = {c: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for c, v in results.items()}
    base = med["vuer send"][0]
    print(f"sink: vuer-client serve ({build}); {a.rounds} rounds; medians; python {sys.version.split()[0]}")
    print(f"{'case':<28}{'events/s':>12}{'CPU µs/event':>14}{'× vuer':>9}")
    for c in CASES:
        name = "vuer.VuerClient send" if c == "vuer send" else f"vuer_client {c}"
        print(f"{name:<28}{med[c][0]:>12,.0f}{med[c][1]:>14.2f}{med[c][0] / base:>9.1f}")
    if a.json:
        Path(a.json).write_text(json.dumps({c: {"events_per_s": m[0], "cpu_us": m[1]} for c, m in med.items()}, indent=1))


if __name__ == "__main__":
    main()
