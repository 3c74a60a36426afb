"""parse_message: topic and payload checks combined into a typed Reading."""

from __future__ import annotations

from datetime import UTC, datetime

from web.messages import Reading, parse_message, preview
from wire.rejections import Reason, Rejection
from wire.topics import Topic

ARRIVAL = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_reading_uses_arrival_time_without_ts() -> None:
    result = parse_message(
        b"office/lab/sensor1/temperature", b"21.5", ARRIVAL, "office", mid=7, qos=1, connection=3
    )
    assert result == Reading(
        topic=Topic("office", "lab", "sensor1", "temperature"),
        value=21.5,
        ts=ARRIVAL,
        received_at=ARRIVAL,
        mid=7,
        qos=1,
        connection=3,
    )


def test_reading_uses_the_devices_ts_when_given() -> None:
    result = parse_message(b"office/lab/door/open", b'{"value": true, "ts": 0}', ARRIVAL, "office")
    assert isinstance(result, Reading)
    assert result.value == 1.0
    assert result.ts == datetime(1970, 1, 1, tzinfo=UTC)
    assert result.received_at == ARRIVAL


def test_topic_is_checked_before_payload() -> None:
    result = parse_message(b"office/lab", b"NaN", ARRIVAL, "office")
    assert isinstance(result, Rejection)
    assert result.reason is Reason.TOPIC_DEPTH


def test_payload_rejection_passes_through() -> None:
    result = parse_message(b"office/lab/sensor1/temperature", b"NaN", ARRIVAL, "office")
    assert isinstance(result, Rejection)
    assert result.reason is Reason.NOT_FINITE


def test_preview_truncates_and_escapes() -> None:
    assert preview(b"21.5") == "b'21.5'"
    long = preview(b"\x00" * 1000)
    assert long.startswith("b'\\x00")
    assert long.endswith("... (1000 bytes)")
    assert len(long) < 300
    assert "\n" not in preview(b"a\nb")
