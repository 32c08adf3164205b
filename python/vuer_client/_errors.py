"""The exceptions of vuer_client. Each derives from :class:`VuerClientError`,
and where vuer's own client raises a built-in exception for the same fault,
from that built-in too (``ConnectionError``, ``TypeError``, ``ValueError``),
so that code written for ``vuer.VuerClient`` keeps catching them."""


class VuerClientError(Exception):
    """Base class of every error this package raises."""


class ConnectError(VuerClientError, ConnectionError):
    """The connection could not be made (refused, bad URI, TLS, timeout,
    invalid settings). The message says which, and what to do."""


class NotConnectedError(VuerClientError, ConnectionError):
    """``connect()`` has not been called (or has not finished)."""


class ClosedError(VuerClientError, ConnectionError):
    """The client is closed: by ``close()``, or for good after the
    connection was lost (reconnecting off or out of attempts)."""


class QueueFullError(VuerClientError):
    """``publish`` found the outgoing queue full: the event was not queued.
    ``await client.send(e)`` waits for room instead."""


class TooLargeError(VuerClientError, ValueError):
    """The encoded event is larger than the limit for outgoing messages
    (the Vuer server closes the session above 4 MiB) or than the queue."""


class EncodeError(VuerClientError, TypeError):
    """Not an event (no ``etype``), or a value msgpack cannot carry, as
    ``vuer.VuerClient`` would raise ``TypeError`` for it."""


class DeliveryError(VuerClientError):
    """``close()`` could not deliver every accepted event. ``unsent``:
    events never written; ``unconfirmed``: written but never confirmed read
    by the server; ``reason``: why the connection ended."""

    unsent: int = 0
    unconfirmed: int = 0
    reason: str = ""
