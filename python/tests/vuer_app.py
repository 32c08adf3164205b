"""A vuer 0.1.6 server for the Python package's tests.

Usage: python tests/py/ready.py python/tests/vuer_app.py PORT MODE

Prints one JSON line per observation on stdout (after ready.py's
{"kind": "ready"}):
  {"kind": "spawn"}                                  the client="python" spawn handler ran
  {"kind": "event", "etype", "value", "key", "ts", "extra"}   any client event
  {"kind": "rpc", "ok": bool, "value": ...}          a grab_render result

Every event a client sends is recorded, INIT included (ClientEvent's
_deserialize, which vuer calls on each message, is wrapped). The spawn
handler sets a scene (a SET the client receives); each SET_POSITION is
answered with an UPSERT of the box to its sender. MODE "rpc" also asks the
client for a render (session.grab_render) three times.
"""

import asyncio
import base64
import json
import sys

from vuer import Vuer, VuerSession
from vuer.events import ClientEvent
from vuer.schemas import Box, DefaultScene

port, mode = int(sys.argv[1]), sys.argv[2]


def emit(obj):
  sys.stdout.write(json.dumps(obj, default=jsonable) + "\n")
  sys.stdout.flush()


def jsonable(o):
  if isinstance(o, (bytes, bytearray)):
    return {"$bin": base64.b64encode(bytes(o)).decode()}
  return repr(o)


app = Vuer(host="127.0.0.1", port=port, queue_len=10000)

_deserialize = ClientEvent._deserialize


def record(*, etype, ts=None, **kwargs):
  # Every event a client sends, INIT included, before vuer dispatches it.
  emit({
    "kind": "event",
    "etype": etype,
    "value": kwargs.get("value"),
    "key": kwargs.get("key"),
    "ts": ts,
    "extra": {k: v for k, v in kwargs.items() if k not in ("value", "key")},
  })
  return _deserialize(etype=etype, ts=ts, **kwargs)


ClientEvent._deserialize = staticmethod(record)


@app.add_handler("SET_POSITION")
async def on_position(event, session: VuerSession):
  pos = event.value["position"] if isinstance(event.value, dict) else event.value
  session.upsert @ Box(args=[0.3, 0.3, 0.3], key="box", position=pos)


@app.spawn(client="python")
async def python_handler(session: VuerSession):
  emit({"kind": "spawn"})
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


app.start()
