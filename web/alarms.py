"""Alarms raised by Node-RED rules: parse, store with their history, acknowledge, clear, push live.

Rules publish (retained) to ``alarms/<room>/<device>/<type>`` a JSON object
``{"type", "severity", "state": "active"|"cleared", "value", "ts": epoch_ms}`` (every field
optional but the object itself; ``type``, when given, must match the topic). Ingest hands each
message to :meth:`Alarms.handle` from the MQTT thread; nothing a publisher sends makes it raise.

Storage (see migration 0002): one ``alarms`` row per occurrence of a (room, device, type), from
raised to cleared, at most one of them ``active``; and one ``alarm_events`` row per state change
(raised, updated, acked, cleared, and by whom). Retained messages are delivered again each time
the portal subscribes: a message that is not newer than what is stored, or repeats it, changes
nothing. Each change is pushed to signed-in browsers as the Socket.IO event ``alarm``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from flask_socketio import SocketIO
from prometheus_client import Counter
from sqlalchemy import Connection, Engine, Insert, Update, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from web.metrics import Metrics
from web.schema import alarm_events, alarms

log = logging.getLogger(__name__)

ALARM_ROOT = "alarms"
ALARM_EVENT = "alarm"
MAX_PAYLOAD_BYTES = 4096
MAX_LEVEL_LENGTH = 200
MAX_SEVERITY_LENGTH = 32
MAX_TEXT_VALUE_LENGTH = 256
DEFAULT_SEVERITY = "warning"
#: Largest timestamp accepted (9999-12-31T23:59:59.999Z), in milliseconds.
MAX_TS_MS = 253_402_300_799_999
#: Largest integer kept exactly in a JSON number (beyond it, values are refused).
MAX_EXACT_INT = 2**53
_PREVIEW_BYTES = 80

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
            "ts": _ms(self.ts),
            "received_at": _ms(self.received_at),
            "acked_at": _ms(self.acked_at),
            "acked_by": self.acked_by,
            "cleared_at": _ms(self.cleared_at),
            "cleared_by": self.cleared_by,
        }


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else round(moment.timestamp() * 1000)


# -- parsing (pure) -----------------------------------------------------------------------


def _level_ok(level: str) -> bool:
    return (
        0 < len(level) <= MAX_LEVEL_LENGTH
        and not any(char in level for char in "+#\x00")
        and level.isprintable()
    )


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
    if len(levels) != 4 or levels[0] != ALARM_ROOT or not all(map(_level_ok, levels[1:])):
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


# -- storage ------------------------------------------------------------------------------

_COLUMNS = (
    alarms.c.id,
    alarms.c.room,
    alarms.c.device,
    alarms.c.type,
    alarms.c.severity,
    alarms.c.state,
    alarms.c.value,
    alarms.c.ts,
    alarms.c.received_at,
    alarms.c.acked_at,
    alarms.c.acked_by,
    alarms.c.cleared_at,
    alarms.c.cleared_by,
)


def _alarm(row: Any) -> Alarm:
    return Alarm(*row)


def _lock_key(connection: Connection, room: str | None, device: str | None, alarm_type: str) -> None:
    """Serialise changes to one (room, device, type), also across portal replicas."""
    key = json.dumps([room, device, alarm_type])
    connection.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))


def _event(
    connection: Connection, alarm: Alarm, kind: str, actor: str | None, ts: datetime | None = None
) -> None:
    connection.execute(
        insert(alarm_events).values(
            alarm_id=alarm.id,
            kind=kind,
            actor=actor,
            severity=alarm.severity,
            value=alarm.value,
            ts=ts if ts is not None else alarm.ts,
        )
    )


class AlarmStore:
    """Alarms in the lab database. Safe to call from any thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, message: AlarmMessage) -> Alarm | None:
        """Store a rule's message; returns the changed alarm, or None if it changed nothing."""
        with self.engine.begin() as connection:
            _lock_key(connection, message.room, message.device, message.type)
            row = connection.execute(
                select(*_COLUMNS)
                .where(
                    alarms.c.room == message.room,
                    alarms.c.device == message.device,
                    alarms.c.type == message.type,
                )
                .order_by(alarms.c.id.desc())
                .limit(1)
            ).one_or_none()
            latest = None if row is None else _alarm(row)
            change = decide(latest, message)
            if change is Change.IGNORE:
                return None
            statement: Insert | Update
            fields = {"severity": message.severity, "value": message.value, "ts": message.ts}
            if change in (Change.RAISE, Change.RECORD_CLEARED) or latest is None:
                cleared = change is Change.RECORD_CLEARED
                statement = insert(alarms).values(
                    room=message.room,
                    device=message.device,
                    type=message.type,
                    state=message.state,
                    cleared_at=func.now() if cleared else None,
                    **fields,
                )
                kind = "cleared" if cleared else "raised"
            else:
                values: dict[str, Any] = dict(fields)
                if change is Change.CLEAR:
                    values.update(state="cleared", cleared_at=func.now())
                statement = update(alarms).where(alarms.c.id == latest.id).values(**values)
                kind = "updated" if change is Change.UPDATE else "cleared"
            alarm = _alarm(connection.execute(statement.returning(*_COLUMNS)).one())
            _event(connection, alarm, kind, None)
        return alarm

    def get(self, alarm_id: int) -> Alarm | None:
        """One alarm by id."""
        with self.engine.connect() as connection:
            row = connection.execute(select(*_COLUMNS).where(alarms.c.id == alarm_id)).one_or_none()
        return None if row is None else _alarm(row)

    def find(
        self,
        state: str = "all",
        room: str | None = None,
        device: str | None = None,
        limit: int = 1000,
    ) -> list[Alarm]:
        """Alarms, newest first; `state` is ``active``, ``cleared`` or ``all``."""
        query = select(*_COLUMNS).order_by(alarms.c.received_at.desc(), alarms.c.id.desc()).limit(limit)
        if state != "all":
            query = query.where(alarms.c.state == state)
        if room is not None:
            query = query.where(alarms.c.room == room)
        if device is not None:
            query = query.where(alarms.c.device == device)
        with self.engine.connect() as connection:
            return [_alarm(row) for row in connection.execute(query)]

    def acknowledge(self, alarm_id: int, user: str) -> tuple[Alarm, bool] | None:
        """Mark an alarm seen by `user` (the first acknowledgement stays); None if there is no such alarm.

        Returns the alarm and whether this call changed it.
        """
        with self.engine.begin() as connection:
            row = connection.execute(
                update(alarms)
                .where(alarms.c.id == alarm_id, alarms.c.acked_at.is_(None))
                .values(acked_at=func.now(), acked_by=user)
                .returning(*_COLUMNS)
            ).one_or_none()
            if row is None:
                current = connection.execute(select(*_COLUMNS).where(alarms.c.id == alarm_id)).one_or_none()
                return None if current is None else (_alarm(current), False)
            alarm = _alarm(row)
            _event(connection, alarm, "acked", user)
        return alarm, True

    def clear(self, alarm_id: int, user: str) -> tuple[Alarm, bool] | None:
        """Clear an alarm by `user`; None if there is no such alarm. Returns it and whether it changed."""
        with self.engine.begin() as connection:
            found = connection.execute(
                select(alarms.c.room, alarms.c.device, alarms.c.type).where(alarms.c.id == alarm_id)
            ).one_or_none()
            if found is None:
                return None
            _lock_key(connection, *found)
            row = connection.execute(
                update(alarms)
                .where(alarms.c.id == alarm_id, alarms.c.state == "active")
                .values(state="cleared", cleared_at=func.now(), cleared_by=user)
                .returning(*_COLUMNS)
            ).one_or_none()
            if row is None:
                current = connection.execute(select(*_COLUMNS).where(alarms.c.id == alarm_id)).one()
                return _alarm(current), False
            alarm = _alarm(row)
            _event(connection, alarm, "cleared", user, ts=None)
        return alarm, True

    def events(self, alarm_id: int) -> list[dict[str, Any]]:
        """The history of one alarm, oldest first (for tests and tools)."""
        query = (
            select(alarm_events.c.kind, alarm_events.c.actor, alarm_events.c.severity, alarm_events.c.value)
            .where(alarm_events.c.alarm_id == alarm_id)
            .order_by(alarm_events.c.id)
        )
        with self.engine.connect() as connection:
            return [row._asdict() for row in connection.execute(query)]


# -- the portal's alarms ------------------------------------------------------------------


class Alarms:
    """Receives rule messages, stores them, and pushes every change to signed-in browsers.

    Args:
        store: the database side.
        socketio: where ``alarm`` events go (to the room every signed-in client joins).
        metrics: the registry where rejections are counted (``portal_alarms_rejected{reason}``).
        room: the Socket.IO room of signed-in clients.
    """

    def __init__(self, store: AlarmStore, socketio: SocketIO, metrics: Metrics, room: str) -> None:
        self.store = store
        self.socketio = socketio
        self.metrics = metrics
        self.room = room
        self.rejected = Counter(
            "portal_alarms_rejected",
            "Alarm messages refused, by reason",
            ["reason"],
            registry=metrics.registry,
        )
        self._log_lock = threading.Lock()
        self._log_window = (0.0, 0)

    def handle(self, topic: str, payload: bytes) -> None:
        """Parse, store and push one message from the broker (ingest counts it as received).

        Hostile input is counted and logged, never raised. A database error is raised after
        logging, so that ingest retries and, failing that, leaves the message for redelivery.
        """
        try:
            message = parse_alarm(topic, payload, datetime.now(UTC))
            if message is None:
                log.debug("retained alarm deleted topic=%.200s", topic)
                return
            if isinstance(message, Rejected):
                self._reject(message, topic, payload)
                return
            try:
                alarm = self.store.record(message)
            except SQLAlchemyError as exc:
                log.error("alarm not stored, database unavailable: %s", _first_line(exc))
                raise
            if alarm is not None:
                log.info(
                    "alarm %s %s/%s/%s id=%s", alarm.state, alarm.room, alarm.device, alarm.type, alarm.id
                )
                self.push(alarm)
        except SQLAlchemyError:
            raise
        except Exception:  # a bug must not make the broker redeliver the same message forever
            log.exception("alarm handling failed topic=%.200r", topic)

    def acknowledge(self, alarm_id: int, user: str) -> Alarm | None:
        """Acknowledge by `user` and push the change; None if unknown."""
        result = self.store.acknowledge(alarm_id, user)
        if result is None:
            return None
        alarm, changed = result
        if changed:
            log.info("alarm %s acknowledged by %s", alarm_id, user)
            self.push(alarm)
        return alarm

    def clear(self, alarm_id: int, user: str) -> Alarm | None:
        """Clear by `user` and push the change; None if unknown."""
        result = self.store.clear(alarm_id, user)
        if result is None:
            return None
        alarm, changed = result
        if changed:
            log.info("alarm %s cleared by %s", alarm_id, user)
            self.push(alarm)
        return alarm

    def push(self, alarm: Alarm) -> None:
        """Send one alarm to every signed-in client."""
        self.socketio.emit(ALARM_EVENT, alarm.as_json(), to=self.room)

    def _reject(self, rejected: Rejected, topic: str, payload: bytes) -> None:
        self.rejected.labels(rejected.reason.value).inc()
        now = time.monotonic()
        with self._log_lock:
            start, used = self._log_window
            if now - start >= 10.0:
                start, used = now, 0
            self._log_window = (start, used + 1)
        if used < 20:  # at most 20 lines per 10 s: a flood must not fill the disk
            log.warning(
                "alarm rejected reason=%s detail=%s topic=%.200r payload=%r",
                rejected.reason,
                rejected.detail,
                topic,
                bytes(payload[:_PREVIEW_BYTES]),
            )


def _first_line(exc: Exception) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
