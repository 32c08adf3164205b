"""`pip install ./python` in a fresh virtualenv, without vuer or numpy:
the package imports, its own ClientEvent works, and events reach a server
(the repository's Rust server, `vuer-client serve --json --print`).

    python -m venv /tmp/v && /tmp/v/bin/pip install ./python
    /tmp/v/bin/python python/tests/fresh_smoke.py path/to/vuer-client
"""

import asyncio
import json
import re
import subprocess
import sys

import vuer_client
from vuer_client import ClientEvent, VuerClient

assert "vuer" not in sys.modules and "numpy" not in sys.modules


class SetPositionEvent(ClientEvent):
    etype = "SET_POSITION"


def main(exe: str) -> None:
    sink = subprocess.Popen(
        [exe, "serve", "--port", "0", "--no-scene", "--print", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        uri = None
        for line in sink.stdout:
            m = re.search(r"listening on (ws://\S+)", line)
            if m:
                uri = m.group(1)
                break
        assert uri, "the server did not start"

        async def send():
            async with VuerClient(uri) as client:
                await client.send(SetPositionEvent(value=[1.0, 0.5, 0.0]))
                client.send @ SetPositionEvent(value=[2.0, 0.5, 0.0])
                await client.send @ SetPositionEvent(value=[3.0, 0.5, 0.0])
                client.publish({"etype": "SET_POSITION", "value": [4.0, 0.5, 0.0]}, reliable=True)

        asyncio.run(asyncio.wait_for(send(), 30))
        seen = []
        for line in sink.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("etype") == "INIT":
                assert ev["value"]["client"] == "python", ev
            if ev.get("etype") == "SET_POSITION":
                seen.append(ev["value"][0])
                if len(seen) == 4:
                    break
        assert seen == [1.0, 2.0, 3.0, 4.0], seen
        print(f"vuer_client {vuer_client.__version__}: installed and working without vuer ({len(seen)} events)")
    finally:
        sink.kill()


if __name__ == "__main__":
    main(sys.argv[1])
