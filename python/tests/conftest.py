"""Shared fixtures: the real vuer 0.1.6 server (tests/py/ready.py +
python/tests/vuer_app.py) on a free port, and bounded waits."""

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READY = ROOT / "tests" / "py" / "ready.py"
APP = Path(__file__).resolve().parent / "vuer_app.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VuerServer:
    """A real vuer server in a subprocess; its JSON lines collected."""

    def __init__(self, mode: str = "record", port: int = 0, script: Path = APP):
        self.mode = mode
        self.port = port or free_port()
        self.script = script
        self.lines: "queue.Queue[dict]" = queue.Queue()
        self.seen: list = []
        self.proc = None
        self.start()

    @property
    def uri(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        args = [sys.executable, str(READY), str(self.script)]
        if self.script == APP:
            args += [str(self.port), self.mode]
        else:
            env.update(VUER_PORT=str(self.port), VUER_HOST="127.0.0.1")
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
        )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        self.wait_for(lambda ev: ev.get("kind") == "ready", timeout, what="the server to listen")

    def _read(self, proc) -> None:
        for line in proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                self.lines.put({"kind": "text", "text": line})

    def _drain(self) -> None:
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return

    def wait_for(self, pred, timeout: float = 30.0, what: str = "an observation"):
        """The first line seen (now or within `timeout`) that `pred` accepts."""
        deadline = time.monotonic() + timeout
        while True:
            self._drain()
            for ev in self.seen:
                if pred(ev):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; seen: {self.seen[-10:]}")
            try:
                self.seen.append(self.lines.get(timeout=min(left, 0.2)))
            except queue.Empty:
                pass

    def events(self, etype=None) -> list:
        self._drain()
        return [
            e for e in self.seen
            if e.get("kind") == "event" and (etype is None or e.get("etype") == etype)
        ]

    def wait_events(self, etype: str, n: int, timeout: float = 30.0) -> list:
        deadline = time.monotonic() + timeout
        while len(self.events(etype)) < n:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(self.events(etype))} {etype} events of {n} after {timeout} s"
                )
            try:
                self.seen.append(self.lines.get(timeout=0.2))
            except queue.Empty:
                pass
        return self.events(etype)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def restart(self) -> None:
        self.kill()
        self.seen.clear()
        self.start()


@pytest.fixture
def vuer_server():
    s = VuerServer()
    yield s
    s.kill()


@pytest.fixture
def rpc_server():
    s = VuerServer(mode="rpc")
    yield s
    s.kill()
