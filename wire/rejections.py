"""Why an incoming MQTT message was not stored.

Every refusal names one :class:`Reason`. The reason strings are stable: they are the labels of
the rejection counters (logs now, ``/metrics`` later), so rename them only with a changelog entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """A stable, machine-readable cause of rejection."""

    # topic
    TOPIC_UTF8 = "topic_utf8"
    """The topic is not valid UTF-8."""
    TOPIC_DEPTH = "topic_depth"
    """The topic does not have exactly four levels ``<root>/<room>/<device>/<attr>``."""
    TOPIC_ROOT = "topic_root"
    """The first level is not the configured ``TOPIC_ROOT``."""
    TOPIC_LEVEL = "topic_level"
    """Room, device or attribute is not a name by the lab's rule (:mod:`wire.names`)."""

    # payload bytes
    EMPTY = "empty"
    """The payload has no bytes (MQTT uses that to clear a retained message)."""
    OVERSIZE = "oversize"
    """The payload is larger than the limit."""
    BINARY = "binary"
    """The payload holds control bytes (NUL and friends): binary data, not text."""
    BAD_UTF8 = "bad_utf8"
    """The payload is not valid UTF-8."""

    # payload content
    MALFORMED = "malformed"
    """Neither JSON, nor a plain number, nor a single word."""
    NOT_FINITE = "not_finite"
    """NaN or an infinity, spelled out (``NaN``, ``Infinity``, ``-inf``...)."""
    OUT_OF_RANGE = "out_of_range"
    """A number too large for a double precision float (``1e400``, a 400-digit integer)."""
    NULL = "null"
    """JSON ``null`` carries no value."""
    NESTED = "nested"
    """An array, or an object nested inside the value object."""
    MISSING_VALUE = "missing_value"
    """A JSON object without a ``value`` key."""
    UNKNOWN_KEY = "unknown_key"
    """A JSON object with keys other than ``value`` and ``ts``."""
    DUPLICATE_KEY = "duplicate_key"
    """A JSON object naming the same key twice (which one would win is parser-dependent)."""
    BAD_TS = "bad_ts"
    """``ts`` is not a number of milliseconds since 1970 between year 1970 and 9999."""
    BAD_UNIT = "bad_unit"
    """``unit`` is not text of 1 to 16 printable characters without spaces at its ends."""
    PRESENCE = "presence"
    """A presence status (``$state``) that is not ``online``, ``offline`` or ``lost``."""
    BAD_STRING = "bad_string"
    """A string value with control characters or lone surrogates (not storable as text)."""

    # the lab's limits
    DEVICE_LIMIT = "device_limit"
    """A new device in a room (or a lab) already holding as many devices as it may keep
    (``PORTAL_MAX_DEVICES_PER_ROOM``, ``PORTAL_MAX_DEVICES``)."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """A refused message: the reason and a short human explanation (never the payload itself)."""

    reason: Reason
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else str(self.reason)
