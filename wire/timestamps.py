"""Time on the wire: milliseconds since 1970-01-01 UTC, from 0 to the last millisecond of 9999.

A payload's ``ts``, an alarm's ``ts``, the API's ``from`` and ``to`` and the stress tool's send
times are all such numbers; PostgreSQL and Python's ``datetime`` hold every one of them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

#: The last millisecond of the year 9999 (``datetime.max`` in UTC).
MAX_TS_MS = 253_402_300_799_999
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_datetime(ms: float) -> datetime:
    """The UTC time of ``ms`` (0..:data:`MAX_TS_MS`; ``timedelta`` keeps whole microseconds)."""
    return EPOCH + timedelta(milliseconds=ms)


def epoch_ms(when: datetime) -> int:
    """``when`` (aware) as whole milliseconds since 1970, rounded."""
    return round((when - EPOCH) / timedelta(milliseconds=1))


def ms_or_none(when: datetime | None) -> int | None:
    """:func:`epoch_ms` of ``when``, or None for no time."""
    return None if when is None else epoch_ms(when)
