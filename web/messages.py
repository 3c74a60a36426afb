"""Typed telemetry messages: what ingest hands to storage.

:func:`parse_message` is the whole decision "store this or refuse it", as a pure function of the
topic bytes, the payload bytes and the arrival time, so it is tested without a broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from wire.payloads import parse_payload
from wire.rejections import Rejection
from wire.topics import Topic, parse_topic


@dataclass(frozen=True, slots=True)
class Reading:
    """One accepted telemetry value.

    Attributes:
        topic: where it was published.
        value: a float (numbers, booleans as 1.0/0.0) or a string.
        ts: when it was measured: the payload's ``ts`` if it had one, else ``received_at``.
        received_at: when the portal received it from the broker (UTC).
        mid: the MQTT message id, acknowledged once the reading is committed (0 for QoS 0).
        qos: the delivery QoS.
        connection: which broker connection delivered it: a message id means something only on
            the connection it came with (after a reconnect the broker sends it again).
        unit: the unit of measure the payload named, if any.
    """

    topic: Topic
    value: float | str
    ts: datetime
    received_at: datetime
    mid: int = 0
    qos: int = 0
    connection: int = 0
    unit: str | None = None


def parse_message(
    topic: bytes | str,
    payload: bytes | bytearray | memoryview,
    received_at: datetime,
    root: str,
    *,
    mid: int = 0,
    qos: int = 0,
    connection: int = 0,
) -> Reading | Rejection:
    """Validate one MQTT message into a :class:`Reading`, or say why it is refused.

    Args:
        topic: the topic as received (raw bytes preferred: invalid UTF-8 is then a rejection).
        payload: the payload bytes.
        received_at: arrival time, timezone-aware UTC; used when the payload carries no ``ts``.
        root: the expected topic root (``TOPIC_ROOT``).
        mid: MQTT message id, carried along for acknowledgement after commit.
        qos: MQTT QoS of the delivery.
        connection: the broker connection it arrived on (see :attr:`Reading.connection`).
    """
    parsed_topic = parse_topic(topic, root)
    if isinstance(parsed_topic, Rejection):
        return parsed_topic
    parsed = parse_payload(payload)
    if isinstance(parsed, Rejection):
        return parsed
    return Reading(
        topic=parsed_topic,
        value=parsed.value,
        ts=parsed.ts if parsed.ts is not None else received_at,
        received_at=received_at,
        mid=mid,
        qos=qos,
        connection=connection,
        unit=parsed.unit,
    )


def preview(payload: bytes | bytearray | memoryview, limit: int = 64) -> str:
    """A short, log-safe rendering of a payload: at most ``limit`` bytes, escaped, with the size."""
    data = bytes(payload)
    shown = repr(data[:limit])
    if len(data) > limit:
        return f"{shown}... ({len(data)} bytes)"
    return shown
