"""A slow websocket reader that is not this crate: the `websockets` package
(a dependency of the test virtualenv) reading RATE messages per second with
max_queue=1, so that, as in aiohttp-based servers such as Vuer's, a ping is
answered only when the reader reaches it in the stream.

Usage: python slow_reader.py PORT RATE [PONGS]

PONGS is "pong" (default) or "nopong" (pings are never answered).

Prints one JSON line per observation on stdout:
  {"kind": "ready"}                      listening
  {"kind": "age", "n": N, "p50_ms": .., "p99_ms": .., "max_ms": ..}
                                         once a second: the age of the values
                                         read in that second (read time minus
                                         the event's value.t_ns, wall clock)
  {"kind": "closed", "events": N}        the client left
"""

import asyncio
import json
import sys
import time

import msgpack
import websockets
from websockets.asyncio.server import serve

port, rate = int(sys.argv[1]), float(sys.argv[2])
pongs = (sys.argv[3] if len(sys.argv) > 3 else "pong") == "pong"


def emit(obj):
  sys.stdout.write(json.dumps(obj) + "\n")
  sys.stdout.flush()


def report(ages):
  ages.sort()
  n = len(ages)
  emit({
      "kind": "age",
      "n": n,
      "p50_ms": ages[n // 2] / 1e6,
      "p99_ms": ages[min(n - 1, (n * 99) // 100)] / 1e6,
      "max_ms": ages[-1] / 1e6,
  })


async def handler(ws):
  events = 0
  ages = []
  window = time.monotonic()
  try:
    async for msg in ws:
      now = time.time_ns()
      if isinstance(msg, bytes):
        ev = msgpack.unpackb(msg, raw=False)
        value = ev.get("value")
        if isinstance(value, dict) and "t_ns" in value:
          ages.append(now - value["t_ns"])
        events += 1
      if time.monotonic() - window >= 1.0 and ages:
        report(ages)
        ages = []
        window = time.monotonic()
      await asyncio.sleep(1.0 / rate)
  except websockets.ConnectionClosed:
    pass
  emit({"kind": "closed", "events": events})


async def main():
  if not pongs:
    # websockets answers a ping inside its protocol object, by sending a
    # pong frame; dropping those frames keeps the reading unchanged.
    send_frame = websockets.protocol.Protocol.send_frame

    def no_pongs(self, frame):
      if frame.opcode is not websockets.frames.Opcode.PONG:
        send_frame(self, frame)

    websockets.protocol.Protocol.send_frame = no_pongs
  async with serve(handler, "127.0.0.1", port, max_queue=1, ping_interval=None,
                   max_size=None, compression=None) as server:
    emit({"kind": "ready"})
    await server.serve_forever()


asyncio.run(main())
