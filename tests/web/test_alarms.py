"""Alarm messages: parsing (hostile input included) and what each message does to the stored alarm."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.exc import OperationalError

from tests.web.portal_testing import property_test
from web.alarm_messages import (
    Alarm,
    AlarmMessage,
    AlarmRejection,
    Change,
    Rejected,
    decide,
    parse_alarm,
)
from web.alarms import Alarms
from web.metrics import Metrics

NOW = datetime(2025, 1, 1, tzinfo=UTC)
TOPIC = "alarms/lab/sensor1/high_temp"


def parse(payload: Any, topic: str = TOPIC) -> AlarmMessage | Rejected | None:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_alarm(topic, raw, NOW)


def test_a_full_message() -> None:
    message = parse(
        {
            "type": "high_temp",
            "severity": "critical",
            "state": "active",
            "value": 31.5,
            "ts": 1_700_000_000_000,
        }
    )
    assert message == AlarmMessage(
        "lab",
        "sensor1",
        "high_temp",
        "critical",
        "active",
        31.5,
        datetime.fromtimestamp(1_700_000_000, UTC),
    )


def test_defaults_and_booleans() -> None:
    message = parse({"value": True})
    assert isinstance(message, AlarmMessage)
    assert (message.severity, message.state, message.value, message.ts) == ("warning", "active", 1, NOW)


def test_an_empty_payload_deletes_a_retained_alarm_and_is_ignored() -> None:
    assert parse_alarm(TOPIC, b"", NOW) is None


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("alarms/lab/sensor1", b"{}", AlarmRejection.TOPIC),
        ("alarms/lab/sensor1/t/extra", b"{}", AlarmRejection.TOPIC),
        ("office/lab/sensor1/t", b"{}", AlarmRejection.TOPIC),
        ("alarms//sensor1/t", b"{}", AlarmRejection.TOPIC),
        ("alarms/lab/sen\x00sor/t", b"{}", AlarmRejection.TOPIC),
        ("alarms/lab/sensor1/" + "t" * 201, b"{}", AlarmRejection.TOPIC),
        (TOPIC, b"\xff\xfe", AlarmRejection.ENCODING),
        (TOPIC, b"x" * 5000, AlarmRejection.OVERSIZE),
        (TOPIC, b"{not json", AlarmRejection.JSON),
        (TOPIC, b'{"value": NaN}', AlarmRejection.JSON),
        (TOPIC, b'{"value": Infinity}', AlarmRejection.JSON),
        (TOPIC, b"[" * 3000 + b"]" * 3000, AlarmRejection.OVERSIZE),
        (TOPIC, b"[" * 2000 + b"]" * 2000, AlarmRejection.JSON),
        (TOPIC, b"31.5", AlarmRejection.NOT_OBJECT),
        (TOPIC, b'"active"', AlarmRejection.NOT_OBJECT),
        (TOPIC, b"null", AlarmRejection.NOT_OBJECT),
        (TOPIC, b'{"type": "other"}', AlarmRejection.TYPE_MISMATCH),
        (TOPIC, b'{"type": 3}', AlarmRejection.TYPE_MISMATCH),
        (TOPIC, b'{"state": "on"}', AlarmRejection.FIELD),
        (TOPIC, b'{"severity": ""}', AlarmRejection.FIELD),
        (TOPIC, b'{"severity": "' + b"x" * 33 + b'"}', AlarmRejection.FIELD),
        (TOPIC, b'{"severity": "bad\\nline"}', AlarmRejection.FIELD),
        (TOPIC, b'{"severity": 5}', AlarmRejection.FIELD),
        (TOPIC, b'{"value": {"nested": 1}}', AlarmRejection.FIELD),
        (TOPIC, b'{"value": [1]}', AlarmRejection.FIELD),
        (TOPIC, b'{"value": 1e400}', AlarmRejection.FIELD),
        (TOPIC, b'{"value": 123456789012345678901234567890}', AlarmRejection.FIELD),
        (TOPIC, b'{"value": "' + b"v" * 257 + b'"}', AlarmRejection.FIELD),
        (TOPIC, b'{"ts": "yesterday"}', AlarmRejection.FIELD),
        (TOPIC, b'{"ts": -1}', AlarmRejection.FIELD),
        (TOPIC, b'{"ts": true}', AlarmRejection.FIELD),
        (TOPIC, b'{"ts": 1e30}', AlarmRejection.FIELD),
    ],
)
def test_hostile_messages_are_rejected_with_a_reason(
    topic: str, payload: bytes, reason: AlarmRejection
) -> None:
    result = parse_alarm(topic, payload, NOW)
    assert isinstance(result, Rejected)
    assert result.reason == reason
    assert "\n" not in result.detail


def test_a_topic_in_bytes_that_is_not_utf8_is_rejected() -> None:
    result = parse_alarm(b"alarms/\xff/d/t", b"{}", NOW)
    assert isinstance(result, Rejected)
    assert result.reason == AlarmRejection.TOPIC


@property_test
@given(topic=st.text(max_size=60), payload=st.binary(max_size=300))
def test_parsing_never_raises(topic: str, payload: bytes) -> None:
    result = parse_alarm(topic, payload, NOW)
    assert result is None or isinstance(result, AlarmMessage | Rejected)


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=300),
)
_FIELDS = st.sampled_from(["type", "severity", "state", "value", "ts", "other"])


@property_test
@given(body=st.dictionaries(_FIELDS, _SCALARS))
def test_parsing_any_object_never_raises(body: dict[str, Any]) -> None:
    result = parse_alarm(TOPIC, json.dumps(body).encode(), NOW)
    assert isinstance(result, AlarmMessage | Rejected)


# -- decide ---------------------------------------------------------------------------------------

T0 = datetime(2025, 1, 1, 12, tzinfo=UTC)


def message(
    state: str = "active", ts: datetime = T0, severity: str = "major", value: Any = 30
) -> AlarmMessage:
    return AlarmMessage("lab", "sensor1", "high_temp", severity, state, value, ts)  # type: ignore[arg-type]


def stored(state: str = "active", ts: datetime = T0, cleared_by: str | None = None) -> Alarm:
    return Alarm(
        id=1,
        room="lab",
        device="sensor1",
        type="high_temp",
        severity="major",
        state=state,
        value=30,
        ts=ts,
        received_at=T0,
        acked_at=None,
        acked_by=None,
        cleared_at=None if state == "active" else T0,
        cleared_by=cleared_by,
        raised_at=T0,
    )


LATER = T0 + timedelta(seconds=5)
EARLIER = T0 - timedelta(seconds=5)


@pytest.mark.parametrize(
    ("latest", "incoming", "change"),
    [
        (None, message(), Change.RAISE),
        (None, message("cleared"), Change.RECORD_CLEARED),
        (stored(), message(), Change.IGNORE),  # the retained message again
        (stored(), message(ts=LATER), Change.IGNORE),  # same severity and value: a repeat
        (stored(), message(ts=LATER, value=35), Change.UPDATE),
        (stored(), message(ts=LATER, severity="critical"), Change.UPDATE),
        (stored(), message(ts=EARLIER, value=35), Change.IGNORE),  # stale
        (stored(), message("cleared", ts=LATER), Change.CLEAR),
        (stored(), message("cleared", ts=T0), Change.CLEAR),
        (stored(), message("cleared", ts=EARLIER), Change.IGNORE),
        (stored("cleared"), message(), Change.IGNORE),  # retained raise after the rule cleared it
        (stored("cleared", cleared_by="alice"), message(), Change.IGNORE),  # ... after a user did
        (stored("cleared"), message(ts=LATER), Change.RAISE),  # a new occurrence
        (stored("cleared", cleared_by="alice"), message("cleared", ts=LATER), Change.NOTE_CLEARED),
        (stored("cleared"), message("cleared", ts=LATER), Change.IGNORE),
        (stored("cleared"), message("cleared"), Change.IGNORE),
    ],
)
def test_what_a_message_changes(latest: Alarm | None, incoming: AlarmMessage, change: Change) -> None:
    assert decide(latest, incoming) == change


def test_alarm_json_shape() -> None:
    alarm = replace(stored(), acked_at=T0, acked_by="bob")
    body = alarm.as_json()
    assert list(body) == [
        "id",
        "room",
        "device",
        "type",
        "severity",
        "state",
        "value",
        "ts",
        "raised_at",
        "received_at",
        "acked_at",
        "acked_by",
        "cleared_at",
        "cleared_by",
    ]
    assert body["ts"] == body["acked_at"] == round(T0.timestamp() * 1000)
    assert body["cleared_at"] is None


# -- Alarms.handle, with a store and Socket.IO of its own -----------------------------------------


class FakeStore:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.recorded: list[AlarmMessage] = []

    def record(self, message: AlarmMessage) -> Alarm | None:
        if self.fail:
            raise OperationalError("SELECT", {}, Exception("connection refused"))
        self.recorded.append(message)
        return stored()


class FakeSocketIO:
    def __init__(self) -> None:
        self.emitted: list[tuple[str, Any, str]] = []

    def emit(self, event: str, data: Any, to: str) -> None:
        self.emitted.append((event, data, to))


def make_alarms(store: FakeStore) -> tuple[Alarms, FakeSocketIO, Metrics]:
    socketio, metrics = FakeSocketIO(), Metrics()
    alarms = Alarms(store, socketio, metrics, room="site")  # type: ignore[arg-type]
    return alarms, socketio, metrics


def test_a_valid_message_is_stored_and_pushed_to_the_site() -> None:
    store = FakeStore()
    alarms, socketio, _ = make_alarms(store)
    alarms.handle(TOPIC, b'{"severity": "major", "value": 30}')
    assert [m.type for m in store.recorded] == ["high_temp"]
    assert socketio.emitted == [("alarm", stored().as_json(), "site")]


def test_hostile_messages_are_counted_by_reason_and_never_raise() -> None:
    store = FakeStore()
    alarms, socketio, metrics = make_alarms(store)
    for payload in (b"\xff", b"[]", b"{", b'{"state": 1}'):
        alarms.handle(TOPIC, payload)
    alarms.handle("alarms/too/short", b"{}")
    assert store.recorded == []
    assert socketio.emitted == []

    def count(reason: str) -> float | None:
        return metrics.registry.get_sample_value("portal_alarms_rejected_total", {"reason": reason})

    assert (count("encoding"), count("not_object"), count("json"), count("field"), count("topic")) == (
        1,
        1,
        1,
        1,
        1,
    )


def test_a_database_error_is_raised_so_ingest_retries_or_leaves_it_unacknowledged() -> None:
    alarms, socketio, _ = make_alarms(FakeStore(fail=True))
    with pytest.raises(OperationalError):
        alarms.handle(TOPIC, b"{}")
    assert socketio.emitted == []
