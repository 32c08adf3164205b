"""The Vuer server of the remote-control example (vuer docs, "Complete
Example: Remote Control"), for `cargo run --example set_position`.

    python examples/server.py          # listens on ws://localhost:8012

Its SET_POSITION handler upserts the box at the received position; it also
prints each position it receives, numbered, so you can check that all 200
arrive in order. (The upstream example reads `event.value["position"]`, but
its client sends a bare `[x, y, z]` list; both forms are accepted here.)

VUER_PORT and VUER_HOST choose another port or interface.
"""

from vuer import Vuer, VuerSession
from vuer.schemas import Box, DefaultScene

app = Vuer()
received = 0


@app.add_handler("SET_POSITION")
async def on_position(event, session: VuerSession):
  global received
  received += 1
  pos = event.value["position"] if isinstance(event.value, dict) else event.value
  print(f"SET_POSITION {received}: {pos}", flush=True)
  session.upsert @ Box(args=[0.3, 0.3, 0.3], key="box", position=pos)


@app.spawn(start=True)
async def main(session: VuerSession):
  session.set @ DefaultScene(
    Box(args=[0.3, 0.3, 0.3], key="box", position=[0, 0.5, 0]),
  )
  print("Server started. Run `cargo run --example set_position` in another terminal.", flush=True)
  await session.forever()
