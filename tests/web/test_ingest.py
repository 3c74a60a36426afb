"""Ingest handling without a broker: queueing, counting, logging, and paho callbacks."""

from __future__ import annotations

import logging
import queue
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from tests.web.portal_testing import make_settings
from web.ingest import BrokerState, Ingest, IngestStats, LogBudget
from web.messages import Reading
from web.rejections import Reason, Rejection

NOW = datetime(2025, 1, 1, tzinfo=UTC)
# The paho callbacks are called here with stand-ins shaped like paho's objects.
NO_CLIENT: Any = None


def make_ingest(maxsize: int = 0) -> tuple[Ingest, queue.Queue[Reading]]:
    sink: queue.Queue[Reading] = queue.Queue(maxsize=maxsize)
    return Ingest(make_settings(), sink, IngestStats(), clock=lambda: NOW), sink


def test_valid_message_is_queued_and_counted() -> None:
    ingest, sink = make_ingest()
    result = ingest.handle(b"office/lab/sensor1/temperature", b"21.5", mid=3, qos=1)
    assert isinstance(result, Reading)
    assert sink.get_nowait() == result
    assert result.ts == NOW
    assert (result.mid, result.qos) == (3, 1)
    assert ingest.stats.snapshot() == {"accepted": 1, "rejected": {}}


def test_rejections_are_counted_by_reason_and_logged_truncated(caplog: pytest.LogCaptureFixture) -> None:
    ingest, sink = make_ingest()
    caplog.set_level(logging.WARNING, logger="web.ingest")
    ingest.handle(b"office/lab/sensor1/temperature", b"NaN")
    ingest.handle(b"office/lab/sensor1/temperature", b"\x00" * 10_000)
    ingest.handle(b"office/lab/sensor1/temperature", b"\x01")
    ingest.handle(b"office/lab", b"1")
    assert sink.empty()
    assert ingest.stats.snapshot() == {
        "accepted": 0,
        "rejected": {"not_finite": 1, "binary": 2, "topic_depth": 1},
    }
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 4
    assert "reason=not_finite" in lines[0]
    assert "(10000 bytes)" in lines[1]
    assert all(len(line) < 500 for line in lines)


def test_full_queue_drops_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    ingest, sink = make_ingest(maxsize=1)
    assert isinstance(ingest.handle(b"office/a/b/c", b"1"), Reading)
    result = ingest.handle(b"office/a/b/c", b"2")
    assert isinstance(result, Rejection)
    assert result.reason is Reason.QUEUE_FULL
    assert sink.qsize() == 1
    assert ingest.stats.snapshot()["rejected"] == {"queue_full": 1}


def test_rejection_logs_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    ingest, _ = make_ingest()
    caplog.set_level(logging.WARNING, logger="web.ingest")
    for _ in range(100):
        ingest.handle(b"office/a/b/c", b"NaN")
    assert ingest.stats.snapshot()["rejected"] == {"not_finite": 100}
    assert len(caplog.records) == LogBudget().limit


def test_log_budget_reports_what_it_held_back() -> None:
    budget = LogBudget(limit=2, window_s=10)
    assert budget.take(0.0) == (True, 0)
    assert budget.take(1.0) == (True, 0)
    assert budget.take(2.0) == (False, 0)
    assert budget.take(3.0) == (False, 0)
    assert budget.take(10.0) == (True, 2)


@dataclass
class FakeMessage:
    """Shaped like paho's MQTTMessage, including its raw `_topic` bytes."""

    _topic: bytes
    payload: bytes
    mid: int = 1
    qos: int = 0

    @property
    def topic(self) -> str:
        return self._topic.decode("utf-8")  # raises on bad UTF-8, like paho


def test_on_message_survives_bad_utf8_topics() -> None:
    ingest, sink = make_ingest()
    bad: Any = FakeMessage(b"office/\xff/b/c", b"1")
    good: Any = FakeMessage(b"office/a/b/c", b"1", mid=9, qos=1)
    ingest._on_message(NO_CLIENT, None, bad)
    ingest._on_message(NO_CLIENT, None, good)
    assert ingest.stats.snapshot() == {"accepted": 1, "rejected": {"topic_utf8": 1}}
    assert sink.get_nowait().mid == 9


def test_on_message_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    ingest, _ = make_ingest()
    not_a_message: Any = object()
    ingest._on_message(NO_CLIENT, None, not_a_message)
    assert "message handling failed" in caplog.text


class FakeClient:
    def __init__(self) -> None:
        self.subscriptions: list[tuple[str, int]] = []

    def subscribe(self, topic: str, qos: int) -> None:
        self.subscriptions.append((topic, qos))


def test_connect_subscribes_and_subscribe_makes_ready() -> None:
    ingest, _ = make_ingest()
    client: Any = FakeClient()
    assert not ingest.ready
    ingest._on_connect(client, None, None, SimpleNamespace(is_failure=False), None)
    assert client.subscriptions == [("office/#", 1)]
    assert ingest.state is BrokerState.CONNECTED
    assert not ingest.ready
    ingest._on_subscribe(client, None, 1, [SimpleNamespace(is_failure=False)], None)
    assert ingest.ready
    ingest._on_disconnect(client, None, None, "gone", None)
    assert ingest.state is BrokerState.DISCONNECTED


def test_refused_connection_and_subscription_are_not_ready(caplog: pytest.LogCaptureFixture) -> None:
    ingest, _ = make_ingest()
    client: Any = FakeClient()
    ingest._on_connect(client, None, None, SimpleNamespace(is_failure=True), None)
    assert ingest.state is BrokerState.REFUSED
    assert client.subscriptions == []
    assert "MQTT_PORTAL_PASSWORD" in caplog.text
    ingest._on_disconnect(client, None, None, "refused", None)
    assert ingest.state is BrokerState.REFUSED
    ingest._on_connect(client, None, None, SimpleNamespace(is_failure=False), None)
    ingest._on_subscribe(client, None, 1, [SimpleNamespace(is_failure=True)], None)
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
