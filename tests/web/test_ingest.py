"""Ingest without a broker: queueing, back-pressure, counting, logging, acknowledgements, callbacks."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from tests.web.portal_testing import make_settings
from web import ingest as ingest_module
from web.buffer import ReadingBuffer
from web.ingest import BrokerState, Ingest, LogBudget
from web.messages import Reading
from web.metrics import Metrics
from web.presence import UNKNOWN_AGE
from wire.rejections import Reason, Rejection

NOW = datetime(2025, 1, 1, tzinfo=UTC)
TOPIC = b"office/lab/sensor1/temperature"


def make_ingest(maxsize: int = 1000, alarms: Any = None) -> tuple[Ingest, ReadingBuffer]:
    buffer = ReadingBuffer(maxsize)
    ingest = Ingest(make_settings(), buffer, Metrics(), alarms=lambda: alarms, clock=lambda: NOW)
    return ingest, buffer


def sample(ingest: Ingest, name: str, **labels: str) -> float:
    return ingest.metrics.registry.get_sample_value(name, labels) or 0.0


@dataclass
class FakeClient:
    """Records what ingest asks of paho's client."""

    subscriptions: list[list[tuple[str, int]]] = field(default_factory=list)
    acks: list[tuple[int, int]] = field(default_factory=list)

    def subscribe(self, topics: list[tuple[str, int]]) -> None:
        self.subscriptions.append(topics)

    def ack(self, mid: int, qos: int) -> None:
        self.acks.append((mid, qos))


@dataclass
class FakeMessage:
    """Shaped like paho's MQTTMessage, including its raw `_topic` bytes."""

    _topic: bytes
    payload: bytes
    mid: int = 1
    qos: int = 1
    retain: bool = False

    @property
    def topic(self) -> str:
        return self._topic.decode("utf-8")  # raises on bad UTF-8, like paho


def paho(client: object) -> Any:
    """A stand-in, typed as paho's client for the callbacks under test."""
    return client


def connected(ingest: Ingest, client: FakeClient | None = None) -> FakeClient:
    """Run the connect and subscribe callbacks, as paho does when the broker accepts us."""
    client = client or FakeClient()
    ingest._client = paho(client)
    ingest._on_connect(
        paho(client), None, SimpleNamespace(session_present=False), SimpleNamespace(is_failure=False), None
    )
    ingest._on_subscribe(paho(client), None, 1, [SimpleNamespace(is_failure=False)] * 2, None)
    return client


def deliver(
    ingest: Ingest, client: FakeClient, topic: bytes, payload: bytes, *, mid: int = 1, qos: int = 1
) -> None:
    message: Any = FakeMessage(topic, payload, mid, qos)
    ingest._on_message(paho(client), None, message)


# -- handling ---------------------------------------------------------------------------


def test_valid_message_is_buffered_and_counted() -> None:
    ingest, buffer = make_ingest()
    result = ingest.handle(TOPIC, b"21.5", mid=3, qos=1)
    assert isinstance(result, Reading)
    assert buffer.take(10, 0, 0) == [result]
    assert (result.ts, result.mid, result.qos, result.value) == (NOW, 3, 1, 21.5)
    assert sample(ingest, "portal_ingest_messages_total") == 1


def test_rejections_are_counted_by_reason_and_logged_truncated(caplog: pytest.LogCaptureFixture) -> None:
    ingest, buffer = make_ingest()
    caplog.set_level(logging.WARNING, logger="web.ingest")
    ingest.handle(TOPIC, b"NaN")
    ingest.handle(TOPIC, b"\x00" * 10_000)
    ingest.handle(TOPIC, b"\x01")
    ingest.handle(b"office/lab", b"1")
    ingest.handle(b"office/lab/" + b"x" * 200 + b"/t", b"1")  # long, but valid
    ingest.handle(b"office/lab/" + b"x" * 5000 + b"/t", b"1")  # a name too long
    assert len(buffer) == 1
    assert sample(ingest, "portal_ingest_rejected_total", reason="not_finite") == 1
    assert sample(ingest, "portal_ingest_rejected_total", reason="binary") == 2
    assert sample(ingest, "portal_ingest_rejected_total", reason="topic_depth") == 1
    assert sample(ingest, "portal_ingest_rejected_total", reason="topic_level") == 1
    assert sample(ingest, "portal_ingest_messages_total") == 1  # the long but valid topic
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 5
    assert "reason=not_finite" in lines[0]
    assert "(10000 bytes)" in lines[1]
    assert all(len(line) < 600 for line in lines)


def test_rejection_logs_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    ingest, _ = make_ingest()
    caplog.set_level(logging.WARNING, logger="web.ingest")
    for _ in range(100):
        ingest.handle(TOPIC, b"NaN")
    assert sample(ingest, "portal_ingest_rejected_total", reason="not_finite") == 100
    assert len(caplog.records) == LogBudget().limit


def test_log_budget_reports_what_it_held_back() -> None:
    budget = LogBudget(limit=2, window_s=10)
    assert budget.take(0.0) == (True, 0)
    assert budget.take(1.0) == (True, 0)
    assert budget.take(2.0) == (False, 0)
    assert budget.take(3.0) == (False, 0)
    assert budget.take(10.0) == (True, 2)


def test_a_full_buffer_blocks_ingest_until_the_writer_takes_readings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ingest_module, "PUT_WAIT_S", 0.01)
    ingest, buffer = make_ingest(maxsize=1)
    assert isinstance(ingest.handle(TOPIC, b"1"), Reading)
    results: list[object] = []
    blocked = threading.Thread(target=lambda: results.append(ingest.handle(TOPIC, b"2")))
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive(), "ingest must wait for room, never drop"
    assert [r.value for r in buffer.take(10, 0, 0)] == [1.0]
    blocked.join(2)
    assert not blocked.is_alive()
    assert [r.value for r in buffer.take(10, 0, 0)] == [2.0]
    assert isinstance(results[0], Reading)


def test_a_blocked_ingest_gives_up_when_paused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_module, "PUT_WAIT_S", 0.01)
    ingest, buffer = make_ingest(maxsize=1)
    ingest.handle(TOPIC, b"1")
    results: list[object] = []
    blocked = threading.Thread(target=lambda: results.append(ingest.handle(TOPIC, b"2")))
    blocked.start()
    ingest.pause()
    blocked.join(2)
    assert results == [None]  # not taken: left unacknowledged for the broker to send again
    assert len(buffer) == 1


# -- acknowledgements -------------------------------------------------------------------


def test_readings_are_acknowledged_only_when_the_writer_says_so() -> None:
    ingest, buffer = make_ingest()
    client = connected(ingest)
    deliver(ingest, client, TOPIC, b"1", mid=10)
    deliver(ingest, client, TOPIC, b"2", mid=11)
    assert client.acks == []
    ingest.acknowledge(buffer.take(10, 0, 0))
    assert client.acks == [(10, 1), (11, 1)]


def test_rejected_messages_are_acknowledged_at_once() -> None:
    ingest, buffer = make_ingest()
    client = connected(ingest)
    deliver(ingest, client, TOPIC, b"NaN", mid=5)
    deliver(ingest, client, b"office/\xff/b/c", b"1", mid=6)
    assert client.acks == [(5, 1), (6, 1)]
    assert len(buffer) == 0
    assert sample(ingest, "portal_ingest_rejected_total", reason="topic_utf8") == 1


def test_readings_from_an_earlier_connection_are_not_acknowledged() -> None:
    ingest, buffer = make_ingest()
    client = connected(ingest)
    deliver(ingest, client, TOPIC, b"1", mid=7)
    ingest._on_disconnect(paho(client), None, None, "gone", None)
    connected(ingest, client)
    deliver(ingest, client, TOPIC, b"1", mid=7)  # the broker sends it again after the reconnect
    old, new = buffer.take(10, 0, 0)
    ingest.acknowledge([old])
    assert client.acks == []  # mid 7 of the old connection means nothing now
    ingest.acknowledge([new])
    assert client.acks == [(7, 1)]


def test_qos0_readings_need_no_acknowledgement() -> None:
    ingest, buffer = make_ingest()
    client = connected(ingest)
    deliver(ingest, client, TOPIC, b"1", mid=0, qos=0)
    ingest.acknowledge(buffer.take(10, 0, 0))
    assert client.acks == []


def test_a_paused_ingest_takes_and_acknowledges_nothing() -> None:
    ingest, buffer = make_ingest()
    client = connected(ingest)
    ingest.pause()
    deliver(ingest, client, TOPIC, b"1", mid=3)
    deliver(ingest, client, TOPIC, b"NaN", mid=4)
    assert len(buffer) == 0
    assert client.acks == []


def test_on_message_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    ingest, _ = make_ingest()
    not_a_message: Any = SimpleNamespace(mid=1, qos=1)
    client = connected(ingest)
    ingest._on_message(paho(client), None, not_a_message)
    assert "message handling failed" in caplog.text
    assert client.acks == [(1, 1)]  # skipped, but not left to block the in-flight window


# -- alarms -----------------------------------------------------------------------------


class RecordingAlarms:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.handled: list[tuple[str, bytes]] = []

    def handle(self, topic: str, payload: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("database down")
        self.handled.append((topic, payload))


def test_alarm_messages_go_to_the_alarms_handler_then_are_acknowledged() -> None:
    alarms = RecordingAlarms()
    ingest, buffer = make_ingest(alarms=alarms)
    client = connected(ingest)
    deliver(ingest, client, b"alarms/lab/sensor1/high_temp", b'{"state": "active"}', mid=9)
    assert alarms.handled == [("alarms/lab/sensor1/high_temp", b'{"state": "active"}')]
    assert client.acks == [(9, 1)]
    assert len(buffer) == 0
    assert sample(ingest, "portal_alarms_received_total") == 1


def test_alarm_messages_without_a_handler_are_counted_and_acknowledged() -> None:
    ingest, _ = make_ingest(alarms=None)
    client = connected(ingest)
    deliver(ingest, client, b"alarms/lab/sensor1/high_temp", b"{}", mid=2)
    assert client.acks == [(2, 1)]
    assert sample(ingest, "portal_alarms_received_total") == 1


def test_a_failing_alarm_handler_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_module, "ALARM_RETRY_MIN_S", 0.001)
    alarms = RecordingAlarms(failures=2)
    ingest, _ = make_ingest(alarms=alarms)
    client = connected(ingest)
    deliver(ingest, client, b"alarms/a/b/c", b"{}", mid=4)
    assert len(alarms.handled) == 1
    assert client.acks == [(4, 1)]


def test_an_alarm_that_cannot_be_stored_is_left_to_the_broker(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ingest_module, "ALARM_RETRY_MIN_S", 0.001)
    monkeypatch.setattr(ingest_module, "ALARM_RETRY_S", 0.01)
    ingest, _ = make_ingest(alarms=RecordingAlarms(failures=1000))
    client = connected(ingest)
    deliver(ingest, client, b"alarms/a/b/c", b"{}", mid=4)
    assert client.acks == []  # the broker sends it again on the next connection
    assert "left for redelivery" in caplog.text


# -- connection callbacks ---------------------------------------------------------------


def test_connect_subscribes_to_telemetry_and_alarms_and_subscribe_makes_ready() -> None:
    ingest, _ = make_ingest()
    client = FakeClient()
    assert not ingest.ready
    ingest._on_connect(
        paho(client), None, SimpleNamespace(session_present=True), SimpleNamespace(is_failure=False), None
    )
    assert client.subscriptions == [[("office/#", 1), ("alarms/#", 1)]]
    assert ingest.state is BrokerState.CONNECTED
    assert not ingest.ready
    ingest._on_subscribe(paho(client), None, 1, [SimpleNamespace(is_failure=False)] * 2, None)
    assert ingest.ready
    assert ingest.metrics.registry.get_sample_value("portal_broker_connected") == 1
    ingest._on_disconnect(paho(client), None, None, "gone", None)
    assert ingest.state is BrokerState.DISCONNECTED
    assert ingest.metrics.registry.get_sample_value("portal_broker_connected") == 0


def test_refused_connection_and_subscription_are_not_ready(caplog: pytest.LogCaptureFixture) -> None:
    ingest, _ = make_ingest()
    client = FakeClient()
    ingest._on_connect(paho(client), None, None, SimpleNamespace(is_failure=True), None)
    assert ingest.state is BrokerState.REFUSED
    assert client.subscriptions == []
    assert "MQTT_PORTAL_PASSWORD" in caplog.text
    ingest._on_disconnect(paho(client), None, None, "refused", None)
    assert ingest.state is BrokerState.REFUSED
    ingest._on_connect(paho(client), None, None, SimpleNamespace(is_failure=False), None)
    ingest._on_subscribe(paho(client), None, 1, [SimpleNamespace(is_failure=True)] * 2, None)
    assert not ingest.ready
    assert "ACL" in caplog.text


def test_start_and_stop_with_broker_down() -> None:
    ingest, _ = make_ingest()
    ingest.start()
    try:
        assert not ingest.ready
    finally:
        ingest.stop()
    assert ingest.state is BrokerState.DISCONNECTED


def test_the_session_is_persistent_with_the_configured_client_id() -> None:
    buffer = ReadingBuffer(10)
    ingest = Ingest(make_settings(mqtt_client_id="portal-a"), buffer, Metrics())
    ingest.start()
    try:
        client: Any = ingest._client
        assert client._client_id == b"portal-a"
        assert client._clean_session is False
        assert client._manual_ack is True
    finally:
        ingest.stop()


def test_rejection_type_is_stable() -> None:
    ingest, _ = make_ingest()
    result = ingest.handle(TOPIC, b"")
    assert result == Rejection(Reason.EMPTY, "no bytes")


# -- presence ($state) ----------------------------------------------------------------------


PRESENCE = b"office/lab/sensor1/$state"


@pytest.mark.parametrize(
    "payload", [b"online", b'"offline"', b'{"value": "lost"}', b'{"value": "online", "ts": 1}']
)
def test_presence_is_buffered_as_a_reading_of_its_state(payload: bytes) -> None:
    ingest, buffer = make_ingest()
    result = ingest.handle(PRESENCE, payload)
    assert isinstance(result, Reading)
    assert result.value in ("online", "offline", "lost")
    assert buffer.take(10, 0, 0) == [result]


@pytest.mark.parametrize("payload", [b"sleeping", b"1", b'{"value": "ONLINE"}', b"true"])
def test_presence_that_is_not_a_state_is_refused(payload: bytes) -> None:
    ingest, buffer = make_ingest()
    result = ingest.handle(PRESENCE, payload)
    assert isinstance(result, Rejection)
    assert result.reason == Reason.PRESENCE
    assert len(buffer) == 0
    assert sample(ingest, "portal_ingest_rejected_total", reason="presence") == 1


def test_a_retained_presence_without_a_time_is_of_unknown_age() -> None:
    ingest, _buffer = make_ingest()
    delivered = ingest.handle(PRESENCE, b"lost", retain=True)
    live = ingest.handle(PRESENCE, b"lost")
    stamped = ingest.handle(PRESENCE, b'{"value": "lost", "ts": 1700000000000}', retain=True)
    assert isinstance(delivered, Reading) and isinstance(live, Reading) and isinstance(stamped, Reading)
    assert delivered.ts == UNKNOWN_AGE
    assert live.ts == NOW
    assert stamped.ts == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def test_an_empty_retained_presence_is_a_removal_not_a_rejection() -> None:
    ingest, buffer = make_ingest()
    client = connected(ingest)
    deliver(ingest, client, PRESENCE, b"", mid=7)
    deliver(ingest, client, TOPIC, b"", mid=8)
    assert client.acks == [(7, 1), (8, 1)]
    assert len(buffer) == 0
    assert sample(ingest, "portal_ingest_rejected_total", reason="empty") == 1, "only the telemetry one"
