"""Bad input gets a clear, typed exception: never a crash, a hang, or a
silently lost event."""

import asyncio
import os
import subprocess
import sys
import time

import pytest
from vuer.events import ClientEvent

import vuer_client
from vuer_client import VuerClient
from conftest import free_port

from test_client import run


def test_a_refused_connection_raises_connect_error_at_once():
    async def main():
        t0 = time.monotonic()
        with pytest.raises(vuer_client.ConnectError, match="refused") as e:
            await VuerClient(f"ws://127.0.0.1:{free_port()}").connect()
        assert isinstance(e.value, ConnectionError)  # what vuer's users catch
        assert time.monotonic() - t0 < 5
    run(main())


def test_bad_uris_and_settings_are_refused_with_the_reason():
    async def main():
        with pytest.raises(vuer_client.ConnectError, match="scheme|URI"):
            await VuerClient("ftp://127.0.0.1:1").connect()
        with pytest.raises(vuer_client.ConnectError, match="max_queued_bytes"):
            await VuerClient("ws://127.0.0.1:1", max_queued_bytes=2**31).connect()
        with pytest.raises(ValueError, match="max_queued_events"):
            VuerClient(max_queued_events=0)
        with pytest.raises(ValueError, match="max_age"):
            VuerClient(max_age=-1.0)
        with pytest.raises(ValueError, match="close_timeout"):
            VuerClient(close_timeout=float("nan"))
        with pytest.raises(ValueError, match="max_size"):
            VuerClient(max_size=0)
        with pytest.raises(TypeError, match="ssl"):
            VuerClient(ssl=object())
    run(main())


def test_environment_is_read_as_vuer_reads_it(monkeypatch):
    monkeypatch.setenv("VUER_CLIENT_URI", "ws://127.0.0.1:9")
    monkeypatch.setenv("WEBSOCKET_MAX_SIZE", "1000")
    monkeypatch.setenv("VUER_SSL_VERIFY", "false")
    c = VuerClient()
    assert (c.uri, c.websocket_max_size, c.ssl_verify) == ("ws://127.0.0.1:9", 1000, False)
    assert VuerClient(URI="ws://h:1").uri == "ws://h:1"  # as vuer's docs write it
    monkeypatch.setenv("WEBSOCKET_MAX_SIZE", "lots")
    with pytest.raises(ValueError, match="WEBSOCKET_MAX_SIZE"):
        VuerClient()
    monkeypatch.delenv("VUER_CLIENT_URI")
    monkeypatch.delenv("WEBSOCKET_MAX_SIZE")
    assert VuerClient().uri == "ws://localhost:8012"


def test_not_connected_raises_connection_error():
    async def main():
        c = VuerClient()
        with pytest.raises(ConnectionError, match="Not connected"):
            await c.send(ClientEvent(etype="X"))
        with pytest.raises(ConnectionError):
            c.send @ ClientEvent(etype="X")
        with pytest.raises(vuer_client.NotConnectedError):
            c.publish(ClientEvent(etype="X"))
        with pytest.raises(ConnectionError):
            await c.recv()
        assert not c.connected
        await c.close()  # closing what never connected is fine
    run(main())


def test_what_is_not_an_event_or_cannot_be_encoded_raises_and_the_session_goes_on(vuer_server):
    class NoEtype:
        pass

    async def main():
        async with VuerClient(vuer_server.uri) as client:
            for bad in ["hello", 42, None, NoEtype(), {"value": 1}, {"etype": 5}]:
                with pytest.raises(vuer_client.EncodeError):
                    await client.send(bad)
                with pytest.raises(TypeError):  # also a TypeError, as vuer raises
                    client.send @ bad
                with pytest.raises(TypeError):
                    client.publish(bad)
            for value in [object(), {1, 2}, lambda: 0]:
                with pytest.raises(TypeError, match="Cannot serialize"):
                    await client.send(ClientEvent(etype="BAD", value=value))
            with pytest.raises(OverflowError):
                await client.send(ClientEvent(etype="BAD", value=2**64))
            with pytest.raises(ValueError):
                await client.send(ClientEvent(etype="BAD", ts=float("nan")))
            nested = []
            for _ in range(600):
                nested = [nested]
            with pytest.raises(ValueError, match="recursion"):
                await client.send(ClientEvent(etype="BAD", value=nested))
            with pytest.raises(vuer_client.TooLargeError):
                await client.send(ClientEvent(etype="HUGE", value=b"x" * (5 << 20)))
            # Nothing bad reached the server: the session is alive.
            await client.send(ClientEvent(etype="OK", value=1))
            await client.flush()
            assert client.connected
    run(main())
    vuer_server.wait_events("OK", 1)
    assert not vuer_server.events("BAD") and not vuer_server.events("HUGE")


def test_a_full_queue_refuses_publish_counts_send_at_and_makes_send_wait(vuer_server):
    async def main():
        client = await VuerClient(vuer_server.uri, max_queued_events=8, close_timeout=1.0).connect()
        vuer_server.kill()  # nobody reads: the queue fills while reconnecting
        for _ in range(100):
            if not client.connected:
                break
            await asyncio.sleep(0.05)
        refused = 0
        for i in range(50):
            try:
                client.publish(ClientEvent(etype="R", value=i), reliable=True)
            except vuer_client.QueueFullError as e:
                refused += 1
                assert "full" in str(e)
        assert refused == 50 - 8
        before = client.stats()["send_at_errors"]
        client.send @ ClientEvent(etype="R", value=-1)  # never raises, never blocks
        assert client.stats()["send_at_errors"] == before + 1
        assert "not sent" in client.stats()["send_at_last_error"]
        with pytest.raises(asyncio.TimeoutError):  # it waits for room
            await asyncio.wait_for(client.send(ClientEvent(etype="R", value=-2)), 0.3)
        with pytest.raises(vuer_client.DeliveryError) as e:
            await client.close()
        assert e.value.unsent >= 8
    run(main())


def test_a_script_exits_cleanly_after_closing_again_and_again(vuer_server):
    # The interpreter's exit must not race a background thread (it once
    # aborted the process in one run of three).
    code = (
        "import asyncio, vuer_client\n"
        "async def main():\n"
        f"    async with vuer_client.VuerClient({vuer_server.uri!r}) as c:\n"
        "        await c.send({'etype': 'EXIT', 'value': 1})\n"
        "        c.publish({'etype': 'EXIT', 'value': 2})\n"
        "        await c.recv(timeout=0.05)\n"
        "asyncio.run(main())\n"
    )
    for _ in range(15):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr[-2000:]
    vuer_server.wait_events("EXIT", 30)
