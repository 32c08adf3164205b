"""Events: this package's ``ClientEvent`` for users without vuer, and the
objects ``recv`` returns."""

import sys
import time
from typing import Any, Dict, Optional


class ClientEvent:
    """An event for the server: the same constructor and wire form as
    ``vuer.events.ClientEvent`` (use either; both are accepted, as is any
    subclass, or a dict with an ``etype``).

    Subclass it with an ``etype`` class attribute (and optionally a default
    ``value``)::

        class SetPositionEvent(ClientEvent):
            etype = "SET_POSITION"
            value = [0, 0, 0]

        SetPositionEvent(value=[1, 2, 3])
        ClientEvent(etype="CLICK", key="button-1", value={"x": 1})

    ``ts`` is the creation time in seconds (sent as integer milliseconds);
    every keyword argument becomes an attribute and a field of the message.
    """

    etype: str
    value: Any = None

    def __init__(self, ts: Optional[float] = None, **kwargs: Any) -> None:
        self.ts = time.time() if ts is None else ts
        self.__dict__.update(kwargs)

    def __repr__(self) -> str:
        return f"client<{self.etype}>({self.value})"

    def __eq__(self, etype: object) -> bool:
        return self.etype == etype

    __hash__ = None  # type: ignore[assignment]  # as vuer's: compared to etype strings

    def _serialize(self) -> Dict[str, Any]:
        """The message as a dict, as vuer's ``ClientEvent._serialize``
        (``ts`` still in seconds: the client sends it in milliseconds)."""
        return {**self.__dict__, "etype": self.etype, "value": _serializer(self.value)}


def _serializer(data: Any) -> Any:
    # vuer.serdes.serializer
    if hasattr(data, "_serialize"):
        return data._serialize()
    if isinstance(data, (list, tuple)):
        return [_serializer(d) for d in data]
    return data


def event_class() -> type:
    """The class received events are made of: vuer's ``ClientEvent`` when
    vuer is loaded (what ``vuer.VuerClient.recv`` returns), else ours."""
    vuer_events = sys.modules.get("vuer.events")
    if vuer_events is not None:
        return vuer_events.ClientEvent
    return ClientEvent


def make_event(payload: Dict[Any, Any]) -> Any:
    """``ClientEvent(**payload)``, as vuer's client builds received events
    (``.etype``, ``.ts``, ``.data`` or ``.value``, ``.key``, ... as sent)."""
    cls = event_class()
    try:
        return cls(**payload)
    except TypeError:
        # A key that is not a str cannot be a keyword: set what can be.
        ev = cls()
        ev.__dict__.update({k: v for k, v in payload.items() if isinstance(k, str)})
        return ev
