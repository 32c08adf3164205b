"""The client of vuer's "Complete Example: Remote Control", with one line
changed: the import of VuerClient.

    python examples/server.py            # the repository's examples/server.py
    python python/examples/client.py
"""

import asyncio
import math
from vuer_client import VuerClient  # was: from vuer import VuerClient
from vuer.events import ClientEvent


class SetPositionEvent(ClientEvent):
    etype = "SET_POSITION"


async def main():
    async with VuerClient() as client:
        # Animate the box by sending position updates
        for i in range(200):
            t = i * 0.05
            x = math.sin(t) * 2
            y = 0.5 + math.sin(t * 2) * 0.3

            client.send @ SetPositionEvent(value={"position": [x, y, 0]})
            await asyncio.sleep(0.016)  # ~60 FPS

asyncio.run(main())
