"""The Vuer server of the remote-control example (vuer docs, "Complete
Example: Remote Control"), for `cargo run --example set_position`.

    python examples/server.py          # listens on ws://localhost:8012

Open http://localhost:8012/ in a browser (the vuer package serves its own
web client there) and run the Rust example: the box follows its trajectory.

Its SET_POSITION handler moves the box to the received position **in every
connected session** (every browser tab, and the client that sent it). The
upstream example writes `session.upsert @ Box(...)`, which in vuer 0.1.6
goes only to the session that sent the event (`VuerSession.CURRENT_WS_ID`):
the Rust client, which renders nothing, while the browser tab is another
session and never hears of it (the box did not move). It also prints each
position it receives, numbered, so you can check that all 200 arrive in
order. (The upstream example reads `event.value["position"]`, but its
client sends a bare `[x, y, z]` list; both forms are accepted here.)

VUER_PORT and VUER_HOST choose another port or interface.
"""

from vuer import Vuer, VuerSession
from vuer.events import Upsert
from vuer.schemas import Box, DefaultScene

app = Vuer()
received = 0


@app.add_handler("SET_POSITION")
async def on_position(event, session: VuerSession):
  global received
  received += 1
  pos = event.value["position"] if isinstance(event.value, dict) else event.value
  print(f"SET_POSITION {received}: {pos}", flush=True)
  box = Box(args=[0.3, 0.3, 0.3], key="box", position=pos)
  # Every session sees the box move: the browser tabs, not only the sender.
  for ws_id in list(app.ws):
    try:
      await app.send(ws_id, Upsert(box))
    except Exception as e:  # a tab closing meanwhile
      print(f"could not update session {ws_id}: {e}", flush=True)


@app.spawn(start=True)
async def main(session: VuerSession):
  session.set @ DefaultScene(
    Box(args=[0.3, 0.3, 0.3], key="box", position=[0, 0.5, 0]),
  )
  print("Server started. Run `cargo run --example set_position` in another terminal.", flush=True)
  await session.forever()
