"""Runs a vuer script and prints {"kind": "ready"} once its server listens.

Usage: python ready.py SCRIPT [ARGS...]

vuer's Vuer.start() blocks and prints a banner before it binds; the test
harness needs to know when the socket is bound, so this wraps aiohttp's
TCPSite.start (which binds) to announce it on stdout.
"""

import json
import runpy
import sys

from aiohttp import web

_site_start = web.TCPSite.start


async def _start(self):
  await _site_start(self)
  print(json.dumps({"kind": "ready"}), flush=True)


web.TCPSite.start = _start
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
