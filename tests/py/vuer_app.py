"""A vuer 0.1.6 app for the interop tests, driven by the Rust test harness.

Usage: python ready.py vuer_app.py PORT MODE [ETYPE ...]

It prints one JSON line per observation on stdout:
  {"kind": "ready"}                            the server is listening (ready.py)
  {"kind": "spawn", "handler": ..., "client": {...}}   a spawn handler started
  {"kind": "event", "etype": ..., "value": ..., "key": ..., "ts": ..., "session": N}
  {"kind": "rpc", "ok": bool, "value": ...}    result of session.grab_render()

Modes:
  record   spawn handlers filtered on client="rust*" and client="python";
           records the etypes named on the command line; the rust handler
           sets a scene and upserts a box after each SET_POSITION.
  rpc      like record, and the spawn handler asks the client for a render
           with session.grab_render(key="DEFAULT", quality=0.5).
"""

import asyncio
import base64
import itertools
import json
import sys

from vuer import Vuer, VuerSession
from vuer.schemas import Box, DefaultScene

port, mode = int(sys.argv[1]), sys.argv[2]
etypes = sys.argv[3:]
sessions = itertools.count()


def emit(obj):
  sys.stdout.write(json.dumps(obj, default=jsonable) + "\n")
  sys.stdout.flush()


def jsonable(o):
  if isinstance(o, (bytes, bytearray)):
    return {"$bin": base64.b64encode(bytes(o)).decode()}
  return repr(o)


app = Vuer(host="127.0.0.1", port=port, queue_len=1000)

for et in etypes:

  def make(et):
    async def handler(event, session):
      emit(
        {
          "kind": "event",
          "etype": event.etype,
          "value": getattr(event, "value", None),
          "key": getattr(event, "key", None),
          "ts": getattr(event, "ts", None),
          "session": getattr(session, "_test_id", None),
        }
      )
      if et == "SET_POSITION":
        pos = event.value["position"] if isinstance(event.value, dict) else event.value
        session.upsert @ Box(args=[0.3, 0.3, 0.3], key="box", position=pos)

    return handler

  app.add_handler(et)(make(et))


@app.spawn(client="rust*")
async def rust_handler(session: VuerSession):
  session._test_id = next(sessions)
  emit({"kind": "spawn", "handler": "rust", "session": session._test_id})
  session.set @ DefaultScene(Box(args=[0.3, 0.3, 0.3], key="box", position=[0, 0.5, 0]))
  if mode == "rpc":
    await asyncio.sleep(0.2)
    for _ in range(3):
      try:
        r = await session.grab_render(key="DEFAULT", quality=0.5, ttl=2.0)
        emit({"kind": "rpc", "ok": True, "etype": r.etype, "value": r.value, "key": getattr(r, "key", None)})
      except asyncio.TimeoutError:
        emit({"kind": "rpc", "ok": False})
  await session.forever()


@app.spawn(client="python")
async def python_handler(session: VuerSession):
  emit({"kind": "spawn", "handler": "python"})
  await session.forever()


app.start()
