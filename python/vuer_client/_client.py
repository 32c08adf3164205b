"""``VuerClient``: vuer's client API on the Rust client."""

import asyncio
import inspect
import logging
import os
import platform
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Tuple

from vuer_client import _native
from vuer_client._errors import VuerClientError
from vuer_client._events import make_event

log = logging.getLogger("vuer_client")

DEFAULT_URI = "ws://localhost:8012"
DEFAULT_MAX_SIZE = 2**28


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        n = int(v.strip())
    except ValueError:
        n = 0
    if n <= 0:
        raise ValueError(f"{name}={v!r} is not a positive integer")
    return n


def _env_bool(name: str, default: bool) -> bool:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    t = v.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={v!r} is not a boolean")


def client_info() -> Dict[str, Any]:
    """The INIT value: the fields of vuer's ``get_client_info()`` (``client``
    is ``"python"``: servers that tell clients apart treat this one as
    vuer's), plus ``pkg`` naming this package."""
    from datetime import datetime

    try:
        tz = datetime.now().astimezone().tzinfo
        tz_name = getattr(tz, "key", None) or getattr(tz, "zone", None)
        if tz_name is None:
            import time

            tz_name = time.tzname[0] if time.tzname else None
        off = datetime.now().astimezone().utcoffset()
        tz_offset = int(-off.total_seconds() // 60) if off else None
    except Exception:  # as vuer: the INIT goes out without it
        tz_name, tz_offset = None, None
    from vuer_client import __version__

    return {
        "client": "python",
        "clientVersion": __version__,
        "timezone": tz_name,
        "timezoneOffset": tz_offset,
        "pythonVersion": platform.python_version(),
        "platform": platform.system(),
        "platformVersion": platform.release(),
        "machine": platform.machine(),
        "pkg": "vuer-client",
    }


class VuerClient:
    """A client of a Vuer server, with the API of ``vuer.VuerClient``
    (vuer 0.1.6) on the Rust ``vuer-client`` crate: change the import, keep
    the code::

        from vuer_client import VuerClient      # was: from vuer import VuerClient
        from vuer.events import ClientEvent     # or: from vuer_client import ClientEvent

        class SetPositionEvent(ClientEvent):
            etype = "SET_POSITION"

        async with VuerClient() as client:                  # ws://localhost:8012
            client.send @ SetPositionEvent(value=[0, 0.5, 0])          # never waits
            await client.send(SetPositionEvent(value=[1, 0.5, 0]))     # waits for room
            await client.send @ SetPositionEvent(value=[2, 0.5, 0])    # as vuer's docs write it
            client.publish(SetPositionEvent(value=[3, 0.5, 0]))        # any thread; latest wins
            event = await client.recv(timeout=5.0)                     # or None
            async for event in client:
                print(event.etype, event.data)

    What it adds: every send is encoded and queued in about a microsecond
    (vuer's takes 20-27 µs of CPU); ``publish`` from any thread with the GIL
    released during the hand-off, coalescing (latest value wins per
    ``(etype, key)``) unless ``reliable=True``; reconnects (on by default,
    with the latest value of every key sent again); bounded queues; errors
    raised (typed, from :class:`VuerClientError`), never hidden; ``stats()``.

    Arguments as vuer's: ``uri`` (env ``VUER_CLIENT_URI``, default
    ``ws://localhost:8012``; ``URI=`` as vuer's docs write it), ``max_size``
    (largest inbound message, env ``WEBSOCKET_MAX_SIZE``, default 256 MiB),
    ``ssl_verify`` (env ``VUER_SSL_VERIFY``, default True). Keyword-only
    additions, each defaulting to the Rust client's default:

    * ``reconnect`` (True): reconnect when the connection is lost, with
      backoff from 100 ms doubling to ``reconnect_max_delay`` (5 s), for
      ``reconnect_max_attempts`` attempts (None: forever);
    * ``retry_first_connect`` (False): retry the first connection too
      (else ``connect()`` raises ``ConnectError`` at once);
    * ``restore_state`` (True): after a reconnect, send the latest value of
      every key again (a Vuer session keeps no state across connections);
    * ``max_queued_events`` (65 536) and ``max_queued_bytes`` (64 MiB):
      the outgoing queue's bounds (memory is bounded whatever the server
      does);
    * ``max_age`` (None): events not written this many seconds after they
      were queued are dropped and counted (``stats()["expired"]``);
    * ``connect_timeout`` (10 s), ``close_timeout`` (5 s);
    * ``headers``: extra HTTP headers for the upgrade request (a dict or
      pairs; also accepted as ``additional_headers``/``extra_headers``, the
      websockets names). Their values never appear in logs or errors;
    * ``init``: the INIT event's value (default: vuer's client info fields).

    Other keyword arguments (vuer passes them to ``websockets.connect``)
    raise ``TypeError`` naming them.
    """

    uri: str
    websocket_max_size: int
    ssl_verify: bool

    def __init__(
        self,
        uri: Optional[str] = None,
        max_size: Optional[int] = None,
        ssl_verify: Optional[bool] = None,
        *,
        reconnect: bool = True,
        reconnect_max_attempts: Optional[int] = None,
        reconnect_max_delay: Optional[float] = None,
        retry_first_connect: bool = False,
        restore_state: bool = True,
        max_queued_events: Optional[int] = None,
        max_queued_bytes: Optional[int] = None,
        max_age: Optional[float] = None,
        connect_timeout: Optional[float] = None,
        close_timeout: Optional[float] = None,
        headers: Any = None,
        init: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        # vuer's docs write VuerClient(URI=..., WEBSOCKET_MAX_SIZE=...).
        if "URI" in kwargs:
            u = kwargs.pop("URI")
            uri = u if uri is None else uri
        if "WEBSOCKET_MAX_SIZE" in kwargs:
            m = kwargs.pop("WEBSOCKET_MAX_SIZE")
            max_size = m if max_size is None else max_size
        for name in ("additional_headers", "extra_headers"):
            if name in kwargs:
                extra = kwargs.pop(name)
                headers = list(_pairs(headers)) + list(_pairs(extra))
        if kwargs:
            raise TypeError(
                "VuerClient() got keyword arguments it does not support: "
                + ", ".join(sorted(kwargs))
                + " (vuer passes these to websockets.connect; this client does not use websockets)"
            )
        self.uri = uri if uri is not None else (os.environ.get("VUER_CLIENT_URI") or DEFAULT_URI)
        self.websocket_max_size = (
            max_size if max_size is not None else _env_int("WEBSOCKET_MAX_SIZE", DEFAULT_MAX_SIZE)
        )
        self.ssl_verify = (
            ssl_verify if ssl_verify is not None else _env_bool("VUER_SSL_VERIFY", True)
        )
        if not isinstance(self.websocket_max_size, int) or self.websocket_max_size <= 0:
            raise ValueError(f"max_size must be a positive int, not {self.websocket_max_size!r}")
        for name, v in (
            ("max_queued_events", max_queued_events),
            ("max_queued_bytes", max_queued_bytes),
            ("reconnect_max_attempts", reconnect_max_attempts),
        ):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                raise ValueError(f"{name} must be a positive int, not {v!r}")
        for name, v in (
            ("reconnect_max_delay", reconnect_max_delay),
            ("max_age", max_age),
            ("connect_timeout", connect_timeout),
            ("close_timeout", close_timeout),
        ):
            if v is not None and not (isinstance(v, (int, float)) and 0 <= v < float("inf")):
                raise ValueError(f"{name} must be a number of seconds >= 0, not {v!r}")
        self._options: Dict[str, Any] = dict(
            reconnect=bool(reconnect),
            reconnect_max_attempts=reconnect_max_attempts,
            reconnect_max_delay=reconnect_max_delay,
            retry_first_connect=bool(retry_first_connect),
            restore_state=bool(restore_state),
            max_queued_events=max_queued_events,
            max_queued_bytes=max_queued_bytes,
            max_age=max_age,
            connect_timeout=connect_timeout,
            close_timeout=close_timeout,
            headers=list(_pairs(headers)),
            init=init,
        )
        self._rpc: List[Tuple[str, Callable[[Any], Any]]] = []
        self._rpc_tasks: List["asyncio.Task[None]"] = []
        self._native = _native.Native()
        #: ``await client.send(e)``, ``client.send @ e``, ``await client.send @ e``.
        self.send = self._native.sender()
        # The native method itself: no Python frame per call.
        self.publish = self._native.publish  # type: ignore[method-assign]

    async def connect(self) -> "VuerClient":
        """Connects and sends INIT. Raises ``ConnectError`` (also a
        ``ConnectionError``) with the reason when it cannot. Calling it again
        after ``close()`` opens a new connection."""
        options = dict(self._options)
        options.update(
            uri=self.uri,
            max_size=self.websocket_max_size,
            ssl_verify=self.ssl_verify,
        )
        if options["init"] is None:
            options["init"] = client_info()
        await self._native.connect(options)
        for pattern, answer in self._rpc:
            self._register_rpc(pattern, answer)
        return self

    async def close(self) -> None:
        """Delivers what is queued (within ``close_timeout``), then closes.
        Raises ``DeliveryError`` if accepted events were not delivered."""
        for task in self._rpc_tasks:
            task.cancel()
        self._rpc_tasks.clear()
        note = await self._native.close()
        if note is not None:
            log.debug("close: %s", note)

    async def __aenter__(self) -> "VuerClient":
        return await self.connect()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            await self.close()
            return
        # Leaving on an exception: close, and do not hide that exception
        # behind a delivery error (which is logged).
        try:
            await self.close()
        except VuerClientError as e:
            log.warning("close after %s: %s", exc_type.__name__, e)

    @property
    def connected(self) -> bool:
        """True while connected (False before ``connect()``, while
        reconnecting, and after ``close()``)."""
        return self._native.connected

    def publish(self, event: Any, reliable: bool = False) -> None:
        """Queues ``event`` without waiting, from any thread (the GIL is
        released during the hand-off). Latest value wins per ``(etype,
        key)``: a newer event of the same type and key replaces one still
        queued (counted in ``stats()["coalesced"]``); ``reliable=True``
        delivers every event, in order. Raises ``QueueFullError`` when a
        reliable event finds the queue full, ``EncodeError`` for what is not
        an event, ``ClosedError`` after ``close()``."""
        self._native.publish(event, reliable)

    async def flush(self) -> None:
        """Waits until every event queued so far has been written."""
        await self._native.flush()

    async def recv(self, timeout: Optional[float] = None) -> Any:
        """The next event from the server (``.etype``, ``.ts``, ``.data``,
        ``.value``, ... as sent), or None after ``timeout`` seconds, or None
        once the client is closed and every received event has been read."""
        payload = await self._native.recv(timeout)
        if payload is None:
            return None
        return make_event(payload)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        event = await self.recv()
        if event is None:
            raise StopAsyncIteration
        return event

    def stats(self) -> Dict[str, Any]:
        """The counters: ``published``, ``sent``, ``coalesced``, ``rejected``,
        ``dropped``, ``pending``, ``received``, ``connects``, ``disconnects``,
        ``rtt`` (s), ``last_error``, ``send_at_errors`` (events refused to
        ``client.send @ e``, which cannot raise) and ``send_at_last_error``,
        ..."""
        return self._native.stats()

    def state(self) -> str:
        """The connection's state: ``connected``, ``reconnecting (attempt
        n)``, ``closed: ...``, or ``not connected``."""
        return self._native.state()

    def answer_rpc(self, pattern: str, answer: Callable[[Any], Any]) -> None:
        """Answers the server's RPC requests whose etype matches ``pattern``
        (``*`` and ``?`` globs, e.g. ``"GRAB_RENDER"``) with ``answer(event)``
        (a function or a coroutine function): its result is the reply's
        ``value`` (None: no reply; the server times out). The matching
        events no longer reach ``recv``. Runs on the event loop while it
        runs; kept across ``connect()`` calls. An exception in ``answer`` is
        logged and the request left unanswered."""
        self._rpc.append((pattern, answer))
        if self._native.shown_uri is not None:
            self._register_rpc(pattern, answer)

    def _register_rpc(self, pattern: str, answer: Callable[[Any], Any]) -> None:
        inbox = self._native.subscribe(pattern)
        native = self._native

        async def serve() -> None:
            while True:
                request = await inbox.recv()
                if request is None:
                    return
                try:
                    value = answer(make_event(request.payload))
                    if inspect.isawaitable(value):
                        value = await value
                    if value is not None:
                        native.respond(request, value)
                except Exception:
                    log.exception("answer_rpc(%r): the answer failed", pattern)

        self._rpc_tasks.append(asyncio.get_running_loop().create_task(serve()))

    def __repr__(self) -> str:
        shown = self._native.shown_uri
        return f"VuerClient({shown if shown is not None else _redacted(self.uri)!r}, {self.state()})"


def _pairs(headers: Any) -> List[Tuple[str, str]]:
    if headers is None:
        return []
    items = headers.items() if hasattr(headers, "items") else headers
    return [(str(k), str(v)) for k, v in items]


def _redacted(uri: str) -> str:
    # Credentials and the query never shown (as the Rust client shows URIs).
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return "<invalid uri>"
    host = rest.split("/", 1)[0].split("?", 1)[0]
    if "@" in host:
        host = "***@" + host.rsplit("@", 1)[1]
    tail = rest[len(rest.split("/", 1)[0]):].split("?", 1)
    return f"{scheme}://{host}{tail[0]}" + ("?***" if len(tail) > 1 else "")

