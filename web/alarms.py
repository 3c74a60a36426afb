"""Alarms raised by Node-RED rules: store with their history, acknowledge, clear, push live.

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
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from typing import Any

from flask_socketio import SocketIO
from prometheus_client import Counter
from sqlalchemy import Connection, Engine, Insert, Update, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from web.alarm_messages import (
    ALARM_EVENT,
    PREVIEW_BYTES,
    Alarm,
    AlarmMessage,
    AlarmRejection,
    Change,
    Rejected,
    decide,
    parse_alarm,
)
from web.db_errors import first_line
from web.metrics import Metrics
from web.schema import alarm_events, alarms

log = logging.getLogger(__name__)

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
    alarms.c.raised_at,
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


#: A bulk change of up to this many alarms is pushed alarm by alarm; more is one ``alarms`` notice.
PUSH_EACH_MAX = 100
#: Sent to every signed-in client after a bulk change of many alarms: ``{"count": n}``.
ALARMS_CHANGED_EVENT = "alarms"
#: Bulk acknowledgements and clears change at most this many alarms per transaction.
BULK_CHUNK = 500
SEVERITIES = ("critical", "major", "minor", "warning")
STATES = ("active", "cleared")


@dataclass(frozen=True)
class AlarmFilter:
    """Which alarms: each field narrows (None: any). ``severities`` and ``types`` are sets of names."""

    state: str | None = None
    severities: frozenset[str] | None = None
    types: frozenset[str] | None = None
    room: str | None = None
    device: str | None = None
    acked: bool | None = None

    def where(self) -> list[Any]:
        """The SQL conditions."""
        conditions: list[Any] = []
        if self.state is not None:
            conditions.append(alarms.c.state == self.state)
        if self.severities is not None:
            conditions.append(alarms.c.severity.in_(sorted(self.severities)))
        if self.types is not None:
            conditions.append(alarms.c.type.in_(sorted(self.types)))
        if self.room is not None:
            conditions.append(alarms.c.room == self.room)
        if self.device is not None:
            conditions.append(alarms.c.device == self.device)
        if self.acked is not None:
            conditions.append(alarms.c.acked_at.is_not(None) if self.acked else alarms.c.acked_at.is_(None))
        return conditions

    @property
    def narrows(self) -> bool:
        """True when at least one field is given."""
        return any(value is not None for value in astuple(self))


def _events(connection: Connection, changed: Sequence[Alarm], kind: str, actor: str) -> None:
    """One history row per changed alarm, in one statement."""
    if changed:
        connection.execute(
            insert(alarm_events),
            [
                {
                    "alarm_id": alarm.id,
                    "kind": kind,
                    "actor": actor,
                    "severity": alarm.severity,
                    "value": alarm.value,
                    "ts": alarm.ts,
                }
                for alarm in changed
            ],
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
                    raised_at=message.ts,
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
        self, which: AlarmFilter | None = None, *, before: int | None = None, limit: int = 1000
    ) -> tuple[list[Alarm], bool, int]:
        """Alarms, newest first (by id), at most ``limit`` of them, older than alarm ``before``.

        Returns:
            The alarms, whether more follow, and how many match the filter in all.
        """
        conditions = (which or AlarmFilter()).where()
        query = select(*_COLUMNS).where(*conditions).order_by(alarms.c.id.desc()).limit(limit + 1)
        if before is not None:
            query = query.where(alarms.c.id < before)
        total = select(func.count()).select_from(alarms).where(*conditions)
        with self.engine.connect() as connection:
            found = [_alarm(row) for row in connection.execute(query)]
            count = connection.execute(total).scalar_one()
        return found[:limit], len(found) > limit, count

    def counts(self) -> dict[str, int]:
        """How many alarms are active, and how many of those nobody has acknowledged."""
        query = select(
            func.count().filter(alarms.c.state == "active"),
            func.count().filter(alarms.c.state == "active", alarms.c.acked_at.is_(None)),
        ).select_from(alarms)
        with self.engine.connect() as connection:
            active, unacked = connection.execute(query).one()
        return {"active": active, "unacked": unacked}

    def acknowledge_many(self, which: AlarmFilter | Sequence[int], user: str) -> list[Alarm]:
        """Acknowledge every alarm not yet acknowledged of `which` (a filter, or ids); the changed ones."""
        changed: list[Alarm] = []
        for chunk in self._chunks(which, alarms.c.acked_at.is_(None)):
            with self.engine.begin() as connection:
                rows = connection.execute(
                    update(alarms)
                    .where(alarms.c.id.in_(chunk), alarms.c.acked_at.is_(None))
                    .values(acked_at=func.now(), acked_by=user)
                    .returning(*_COLUMNS)
                ).all()
                found = [_alarm(row) for row in rows]
                _events(connection, found, "acked", user)
            changed.extend(found)
        return changed

    def clear_many(self, which: AlarmFilter | Sequence[int], user: str) -> list[Alarm]:
        """Clear every active alarm of `which` (a filter, or ids); the changed ones."""
        changed: list[Alarm] = []
        for chunk in self._chunks(which, alarms.c.state == "active"):
            with self.engine.begin() as connection:
                keys = connection.execute(
                    select(alarms.c.room, alarms.c.device, alarms.c.type)
                    .where(alarms.c.id.in_(chunk))
                    .distinct()
                ).all()
                for key in sorted(keys, key=lambda key: json.dumps(list(key))):  # one order: no deadlock
                    _lock_key(connection, *key)
                rows = connection.execute(
                    update(alarms)
                    .where(alarms.c.id.in_(chunk), alarms.c.state == "active")
                    .values(state="cleared", cleared_at=func.now(), cleared_by=user)
                    .returning(*_COLUMNS)
                ).all()
                found = [_alarm(row) for row in rows]
                _events(connection, found, "cleared", user)
            changed.extend(found)
        return changed

    def _chunks(self, which: AlarmFilter | Sequence[int], pending: Any) -> Iterator[list[int]]:
        """The ids of `which` still `pending`, :data:`BULK_CHUNK` at a time (one transaction each)."""
        if isinstance(which, AlarmFilter):
            query = select(alarms.c.id).where(*which.where(), pending).order_by(alarms.c.id)
            with self.engine.connect() as connection:
                ids = list(connection.execute(query).scalars())
        else:
            ids = sorted(set(which))
        for start in range(0, len(ids), BULK_CHUNK):
            yield ids[start : start + BULK_CHUNK]

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
        """The history of one alarm, oldest first: what happened (``raised``, ``updated``,
        ``acked``, ``cleared``), when it was stored (``at``) and reported (``ts``), by whom
        (``actor``, None for the rule), with the severity and value it then had."""
        query = (
            select(
                alarm_events.c.at,
                alarm_events.c.kind,
                alarm_events.c.actor,
                alarm_events.c.severity,
                alarm_events.c.value,
                alarm_events.c.ts,
            )
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
        allows: whether the lab keeps (or may keep) a (room, device); alarms of devices past the
            cap on devices are refused like their readings.
    """

    def __init__(
        self,
        store: AlarmStore,
        socketio: SocketIO,
        metrics: Metrics,
        room: str,
        allows: Callable[[str, str], bool] = lambda _room, _device: True,
    ) -> None:
        self.store = store
        self.allows = allows
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
            if not self.allows(message.room, message.device):
                refused = Rejected(AlarmRejection.DEVICE_LIMIT, "a device past the lab's cap on devices")
                self._reject(refused, topic, payload)
                return
            try:
                alarm = self.store.record(message)
            except SQLAlchemyError as exc:
                log.error("alarm not stored, database unavailable: %s", first_line(exc))
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
        return self._by_user(self.store.acknowledge, alarm_id, user, "acknowledged")

    def clear(self, alarm_id: int, user: str) -> Alarm | None:
        """Clear by `user` and push the change; None if unknown."""
        return self._by_user(self.store.clear, alarm_id, user, "cleared")

    def _by_user(
        self,
        action: Callable[[int, str], tuple[Alarm, bool] | None],
        alarm_id: int,
        user: str,
        done: str,
    ) -> Alarm | None:
        result = action(alarm_id, user)
        if result is None:
            return None
        alarm, changed = result
        if changed:
            log.info("alarm %s %s by %s", alarm_id, done, user)
            self.push(alarm)
        return alarm

    def acknowledge_many(self, which: AlarmFilter | Sequence[int], user: str) -> int:
        """Acknowledge by `user` every alarm of `which` not yet acknowledged; how many changed."""
        return self._push_many(self.store.acknowledge_many(which, user), "acknowledged", user)

    def clear_many(self, which: AlarmFilter | Sequence[int], user: str) -> int:
        """Clear by `user` every active alarm of `which`; how many changed."""
        return self._push_many(self.store.clear_many(which, user), "cleared", user)

    def _push_many(self, changed: list[Alarm], done: str, user: str) -> int:
        """Push each change, or for many of them one ``alarms`` notice (pages then fetch again)."""
        if changed:
            log.info("%s alarms %s by %s", len(changed), done, user)
        if len(changed) <= PUSH_EACH_MAX:
            for alarm in changed:
                self.push(alarm)
        else:
            self.socketio.emit(ALARMS_CHANGED_EVENT, {"count": len(changed)}, to=self.room)
        return len(changed)

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
                bytes(payload[:PREVIEW_BYTES]),
            )
