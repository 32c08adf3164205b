"""The Python anchor: the real vuer.VuerClient (0.1.6) sending SET_POSITION
events to a given server, timed. Run by `cargo bench --bench python_anchor`
against the same in-process sink the Rust benches use.

Usage: python python_anchor.py URI N

Prints one JSON line: {"events": N, "seconds": wall time of the send loop,
"cpu_seconds": this process's CPU time during it}.
"""

import asyncio
import json
import sys
import time

from vuer import VuerClient
from vuer.events import ClientEvent


class SetPosition(ClientEvent):
  etype = "SET_POSITION"


async def main(uri, n):
  async with VuerClient(uri) as client:
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
      # `await client.send(e)`: every event is written (the fire-and-forget
      # `send @ e` would only schedule tasks and hide errors).
      await client.send(SetPosition(value=[float(i), 0.5, 0.0]))
    t1, c1 = time.perf_counter(), time.process_time()
  print(json.dumps({"events": n, "seconds": t1 - t0, "cpu_seconds": c1 - c0}), flush=True)


asyncio.run(main(sys.argv[1], int(sys.argv[2])))
