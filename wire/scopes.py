"""What a live viewer subscribes to: the whole site, one room, or one device of a room.

The portal's page sends ``{"scope": "site"|"room"|"device", "room": R, "device": D}`` in its
``subscribe`` event; the portal (``web.live``) reads it with :meth:`Scope.parse` and routes values
to the scope's Socket.IO channel; the stress tool's viewers (``stress.viewers``) send the same
request and check what they receive against the broker's own delivery, on the scope's MQTT
filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from wire.errors import WireError
from wire.names import name_problem

ScopeKind = Literal["site", "room", "device"]
#: The Socket.IO channel of site-wide value subscribers.
SITE_CHANNEL = "site:values"


class ScopeError(WireError, ValueError):
    """A subscription request is malformed; the message is one line naming the field."""


@dataclass(frozen=True, slots=True)
class Scope:
    """The site, one room, or one device of a room."""

    kind: ScopeKind
    room: str | None = None
    device: str | None = None

    @classmethod
    def parse(cls, data: Any) -> Scope:
        """Read a ``subscribe`` request's scope (what :meth:`as_dict` writes).

        Raises:
            ScopeError: anything else (wrong type, unknown scope, missing or bad names).
        """
        if not isinstance(data, dict):
            raise ScopeError('expected an object like {"scope": "site"}')
        kind = data.get("scope")
        if kind == "site":
            return cls("site")
        if kind == "room":
            return cls("room", _name(data, "room"))
        if kind == "device":
            return cls("device", _name(data, "room"), _name(data, "device"))
        raise ScopeError('"scope" must be "site", "room" or "device"')

    def as_dict(self) -> dict[str, str]:
        """The request, as a page sends it and :meth:`parse` reads it."""
        found: dict[str, str] = {"scope": self.kind}
        if self.room is not None:
            found["room"] = self.room
        if self.device is not None:
            found["device"] = self.device
        return found

    @property
    def channel(self) -> str:
        """The portal's Socket.IO channel that carries this scope's values."""
        if self.kind == "room":
            return f"room:{self.room}"
        if self.kind == "device":
            return f"device:{self.room}/{self.device}"
        return SITE_CHANNEL

    def covers(self, other: Scope) -> bool:
        """True when every value of ``other`` is also a value of this scope."""
        if self.kind == "site":
            return True
        if self.kind == "room":
            return other.kind != "site" and other.room == self.room
        return self == other

    def holds(self, room: str, device: str) -> bool:
        """True when the values of ``device`` in ``room`` belong to this scope."""
        if self.kind == "site":
            return True
        return room == self.room and (self.kind == "room" or device == self.device)

    def topic_filter(self, root: str) -> str:
        """The MQTT filter of this scope's telemetry under ``root``."""
        if self.kind == "site":
            return f"{root}/+/+/+"
        if self.kind == "room":
            return f"{root}/{self.room}/+/+"
        return f"{root}/{self.room}/{self.device}/+"

    def __str__(self) -> str:
        if self.kind == "site":
            return "site"
        return f"room {self.room}" if self.kind == "room" else f"device {self.room}/{self.device}"


def _name(data: dict[str, Any], field: str) -> str:
    value = data.get(field)
    if not isinstance(value, str):
        raise ScopeError(f'"{field}" must be a string')
    problem = name_problem(value)
    if problem is not None:
        raise ScopeError(f'"{field}" is not a valid name: {problem}')
    return value
