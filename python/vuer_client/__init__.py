"""vuer_client: a drop-in, faster ``VuerClient`` for Vuer servers, on the
Rust ``vuer-client`` crate.

    from vuer_client import VuerClient   # instead of: from vuer import VuerClient

See :class:`VuerClient`.
"""

from vuer_client._errors import (
    ClosedError,
    ConnectError,
    DeliveryError,
    EncodeError,
    NotConnectedError,
    QueueFullError,
    TooLargeError,
    VuerClientError,
)
from vuer_client._events import ClientEvent
from vuer_client._native import decode, encode
from vuer_client._client import VuerClient

try:
    from importlib.metadata import version as _version

    __version__ = _version("vuer-client")
except Exception:  # not installed (a source tree on sys.path)
    __version__ = "0.1.0"

__all__ = [
    "VuerClient",
    "ClientEvent",
    "VuerClientError",
    "ConnectError",
    "NotConnectedError",
    "ClosedError",
    "QueueFullError",
    "TooLargeError",
    "EncodeError",
    "DeliveryError",
    "encode",
    "decode",
]
