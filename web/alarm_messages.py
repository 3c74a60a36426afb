"""Alarm messages from the rules, and the alarm model: parse, validate, decide what changes.

Rules publish (retained) to ``alarms/<room>/<device>/<type>`` a JSON object
``{"type", "severity", "state": "active"|"cleared", "value", "ts": epoch_ms}`` (every field
optional but the object itself; ``type``, when given, must match the topic). Everything here is
pure: :func:`parse_alarm` turns bytes into an :class:`AlarmMessage` or a :class:`Rejected` with a
reason, and :func:`decide` says what a message changes about the stored alarm. Storage and the
live push are in :mod:`web.alarms`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from wire.names import is_valid_name
from wire.timestamps import MAX_TS_MS, ms_or_none

ALARM_ROOT = "alarms"
ALARM_EVENT = "alarm"
MAX_PAYLOAD_BYTES = 4096
MAX_SEVERITY_LENGTH = 32
MAX_TEXT_VALUE_LENGTH = 256
DEFAULT_SEVERITY = "warning"
#: Largest timestamp accepted (9999-12-31T23:59:59.999Z), in milliseconds.
#: Largest integer kept exactly in a JSON number (beyond it, values are refused).
MAX_EXACT_INT = 2**53
PREVIEW_BYTES = 80

State = Literal["active", "cleared"]
JsonValue = float | int | str | None


class AlarmRejection(StrEnum):
    """Why an alarm message was refused (the ``reason`` label of ``portal_alarms_rejected``)."""

    TOPIC = "topic"
    OVERSIZE = "oversize"
    ENCODING = "encoding"
    JSON = "json"
    NOT_OBJECT = "not_object"
    FIELD = "field"
    TYPE_MISMATCH = "type_mismatch"
    DEVICE_LIMIT = "device_limit"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A refused message: the reason and a one-line detail for the log."""

    reason: AlarmRejection
    detail: str


@dataclass(frozen=True, slots=True)
class AlarmMessage:
    """One valid alarm message from a rule."""

    room: str
    device: str
    type: str
    severity: str
    state: State
    value: JsonValue
    ts: datetime


@dataclass(frozen=True, slots=True)
class Alarm:
    """A stored alarm occurrence."""

    id: int
    room: str | None
    device: str | None
    type: str
    severity: str | None
    state: str
    value: Any
    ts: datetime | None
    received_at: datetime
    acked_at: datetime | None
    acked_by: str | None
    cleared_at: datetime | None
    cleared_by: str | None
    raised_at: datetime

    def as_json(self) -> dict[str, Any]:
        """The API and Socket.IO shape; times in milliseconds since 1970 (UTC) or null."""
        return {
            "id": self.id,
            "room": self.room,
            "device": self.device,
            "type": self.type,
            "severity": self.severity,
            "state": self.state,
            "value": self.value,
            "ts": ms_or_none(self.ts),
            "raised_at": ms_or_none(self.raised_at),
            "received_at": ms_or_none(self.received_at),
            "acked_at": ms_or_none(self.acked_at),
            "acked_by": self.acked_by,
            "cleared_at": ms_or_none(self.cleared_at),
            "cleared_by": self.cleared_by,
        }


# -- parsing (pure) -----------------------------------------------------------------------


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def parse_alarm(topic: str | bytes, payload: bytes, received_at: datetime) -> AlarmMessage | Rejected | None:
    """Validate one message; None for an empty payload (a retained alarm being deleted)."""
    levels = _topic_levels(topic)
    if isinstance(levels, Rejected):
        return levels
    if not payload:
        return None
    body = _json_object(payload)
    if isinstance(body, Rejected):
        return body
    return _fields(body, *levels, received_at)


def _topic_levels(topic: str | bytes) -> tuple[str, str, str] | Rejected:
    if isinstance(topic, bytes):
        try:
            topic = topic.decode("utf-8")
        except UnicodeDecodeError:
            return Rejected(AlarmRejection.TOPIC, "topic is not UTF-8")
    levels = topic.split("/")
    if len(levels) != 4 or levels[0] != ALARM_ROOT or not all(map(is_valid_name, levels[1:])):
        return Rejected(AlarmRejection.TOPIC, f"topic must be {ALARM_ROOT}/<room>/<device>/<type>")
    return levels[1], levels[2], levels[3]


def _json_object(payload: bytes) -> dict[str, Any] | Rejected:
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Rejected(AlarmRejection.OVERSIZE, f"{len(payload)} bytes, at most {MAX_PAYLOAD_BYTES}")
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError:
        return Rejected(AlarmRejection.ENCODING, "payload is not UTF-8")
    try:
        body = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        return Rejected(AlarmRejection.JSON, f"not JSON: {str(exc)[:80]}")
    if not isinstance(body, dict):
        return Rejected(AlarmRejection.NOT_OBJECT, f"a JSON object is needed, got {type(body).__name__}")
    return body


def _fields(
    body: dict[str, Any], room: str, device: str, alarm_type: str, received_at: datetime
) -> AlarmMessage | Rejected:
    declared = body.get("type", alarm_type)
    if declared != alarm_type:
        return Rejected(AlarmRejection.TYPE_MISMATCH, f"type {str(declared)[:40]!r} is not the topic's")
    severity = body.get("severity", DEFAULT_SEVERITY)
    if not (
        isinstance(severity, str)
        and 0 < len(severity) <= MAX_SEVERITY_LENGTH
        and severity.isprintable()
        and severity.strip() == severity
    ):
        return Rejected(
            AlarmRejection.FIELD, f"severity must be a word of 1-{MAX_SEVERITY_LENGTH} characters"
        )
    state = body.get("state", "active")
    if state not in ("active", "cleared"):
        return Rejected(AlarmRejection.FIELD, "state must be 'active' or 'cleared'")
    value = _value(body.get("value"))
    if isinstance(value, Rejected):
        return value
    ts = _timestamp(body.get("ts"), received_at)
    if isinstance(ts, Rejected):
        return ts
    return AlarmMessage(room, device, alarm_type, severity, state, value, ts)


def _value(value: Any) -> JsonValue | Rejected:
    if isinstance(value, bool):  # like telemetry: booleans are 1 and 0
        return int(value)
    if value is None or (isinstance(value, float) and math.isfinite(value)):
        return value
    if isinstance(value, int) and abs(value) <= MAX_EXACT_INT:
        return value
    if isinstance(value, str) and len(value) <= MAX_TEXT_VALUE_LENGTH:
        return value
    return Rejected(
        AlarmRejection.FIELD,
        f"value must be a number, boolean, null or a string of at most {MAX_TEXT_VALUE_LENGTH} characters",
    )


def _timestamp(ts: Any, received_at: datetime) -> datetime | Rejected:
    if ts is None:
        return received_at
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not 0 <= ts <= MAX_TS_MS:
        return Rejected(AlarmRejection.FIELD, "ts must be milliseconds since 1970 (a number)")
    return datetime.fromtimestamp(round(ts) / 1000, UTC)


# -- what a message does to the stored alarm (pure) --------------------------------------


class Change(StrEnum):
    """What storing a message does."""

    IGNORE = "ignore"  # stale, or a repeat (retained messages come again after each subscribe)
    RAISE = "raise"  # a new occurrence
    UPDATE = "update"  # the active occurrence's severity or value changed
    CLEAR = "clear"  # the rule cleared the active occurrence
    NOTE_CLEARED = "note_cleared"  # the rule cleared what a user had already cleared
    RECORD_CLEARED = "record_cleared"  # a clear for an alarm never seen active


def decide(latest: Alarm | None, message: AlarmMessage) -> Change:
    """The change `message` makes, given the newest stored occurrence of its (room, device, type)."""
    active = message.state == "active"
    if latest is None:
        change = Change.RAISE if active else Change.RECORD_CLEARED
    elif latest.ts is not None and message.ts <= latest.ts:
        # Older news, or the same message again (e.g. a retained alarm a user has since cleared);
        # only a clear stamped with the very time of the active alarm still counts.
        same_time_clear = message.ts == latest.ts and not active and latest.state == "active"
        change = Change.CLEAR if same_time_clear else Change.IGNORE
    elif active and latest.state != "active":
        change = Change.RAISE
    elif active:
        unchanged = (message.severity, message.value) == (latest.severity, latest.value)
        change = Change.IGNORE if unchanged else Change.UPDATE
    elif latest.state == "active":
        change = Change.CLEAR
    else:
        change = Change.NOTE_CLEARED if latest.cleared_by is not None else Change.IGNORE
    return change
