"""MQTT ingest: the portal's broker client, in its own thread.

It connects as ``portal``, subscribes to ``<TOPIC_ROOT>/#`` (again after every reconnect) and, for
each message, runs :meth:`Ingest.handle`: validate with :func:`web.messages.parse_message`, then
put the :class:`~web.messages.Reading` on the storage queue or count the rejection by reason.
paho-mqtt's own loop thread reconnects with backoff, including when the broker is down at start.
Nothing a publisher sends can stop ingest: every callback catches everything.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from web.messages import Reading, parse_message, preview
from web.rejections import Reason, Rejection
from web.settings import Settings

log = logging.getLogger(__name__)

#: Seconds between keepalive pings; the broker drops us after 1.5 times this without traffic.
KEEPALIVE_S = 30
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 10
#: QoS of the subscription: QoS 1 publishers are delivered at least once.
SUBSCRIBE_QOS = 1


class BrokerState(StrEnum):
    """Where the broker connection stands; only ``subscribed`` means ingest works."""

    DISCONNECTED = "disconnected"
    CONNECTED = "connected"
    SUBSCRIBED = "subscribed"
    REFUSED = "refused"


class IngestStats:
    """Thread-safe counters: accepted readings and rejections by reason."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.accepted = 0
        self.rejected: Counter[Reason] = Counter()

    def accept(self) -> None:
        """Count one reading handed to storage."""
        with self._lock:
            self.accepted += 1

    def reject(self, reason: Reason) -> None:
        """Count one rejected message."""
        with self._lock:
            self.rejected[reason] += 1

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of the counters, JSON-ready."""
        with self._lock:
            return {"accepted": self.accepted, "rejected": {str(k): v for k, v in self.rejected.items()}}


class LogBudget:
    """Allows at most ``limit`` log lines per ``window_s``; says how many were held back."""

    def __init__(self, limit: int = 20, window_s: float = 10.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._lock = threading.Lock()
        self._window_start = -window_s
        self._used = 0
        self._suppressed = 0

    def take(self, now: float) -> tuple[bool, int]:
        """Whether one more line may be logged now, and how many were suppressed before it."""
        with self._lock:
            if now - self._window_start >= self.window_s:
                self._window_start = now
                self._used = 0
            if self._used >= self.limit:
                self._suppressed += 1
                return False, 0
            self._used += 1
            suppressed, self._suppressed = self._suppressed, 0
            return True, suppressed


class Ingest:
    """The broker client. Build it, :meth:`start` it, :meth:`stop` it; nothing happens before start.

    Args:
        settings: broker address, password and topic root.
        sink: the storage queue; readings that do not fit are counted as ``queue_full``.
        stats: where acceptances and rejections are counted.
        clock: returns the arrival time of a message (UTC); replaceable in tests.
    """

    def __init__(
        self,
        settings: Settings,
        sink: queue.Queue[Reading],
        stats: IngestStats,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.stats = stats
        self.clock = clock
        self.subscription = f"{settings.topic_root}/#"
        self.state = BrokerState.DISCONNECTED
        self._log_budget = LogBudget()
        self._stopping = False
        self._client: mqtt.Client | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting in the background; returns at once, even if the broker is down."""
        if self._client is not None:
            return
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"portal-{socket.gethostname()}-{os.getpid()}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.username_pw_set(
            self.settings.mqtt_username, self.settings.mqtt_portal_password.get_secret_value()
        )
        client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
        # Belt and braces: our callbacks catch everything, and paho must not end its loop if one leaks.
        client.suppress_exceptions = True
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.connect_async(self.settings.mqtt_host, self.settings.mqtt_port, keepalive=KEEPALIVE_S)
        self._client = client
        client.loop_start()
        log.info(
            "mqtt connecting host=%s port=%s user=%s subscription=%s",
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            self.settings.mqtt_username,
            self.subscription,
        )

    def stop(self) -> None:
        """Disconnect and end the client thread."""
        client, self._client = self._client, None
        if client is None:
            return
        self._stopping = True
        client.disconnect()
        client.loop_stop()
        self.state = BrokerState.DISCONNECTED

    @property
    def ready(self) -> bool:
        """True when connected and subscribed."""
        return self.state is BrokerState.SUBSCRIBED

    # -- the handling, testable without a broker ------------------------------------------

    def handle(
        self, topic: bytes | str, payload: bytes | bytearray, *, mid: int = 0, qos: int = 0
    ) -> Reading | Rejection:
        """Validate one message and hand it to storage, or count and log its rejection."""
        result = parse_message(topic, payload, self.clock(), self.settings.topic_root, mid=mid, qos=qos)
        if isinstance(result, Reading):
            try:
                self.sink.put_nowait(result)
            except queue.Full:
                result = Rejection(Reason.QUEUE_FULL, "storage queue full (database slow or down)")
            else:
                self.stats.accept()
                return result
        self.stats.reject(result.reason)
        allowed, suppressed = self._log_budget.take(time.monotonic())
        if allowed:
            if suppressed:
                log.warning("%s more rejected messages were not logged", suppressed)
            log.warning(
                "message rejected reason=%s detail=%s topic=%s payload=%s",
                result.reason,
                result.detail,
                _topic_for_log(topic),
                preview(payload),
            )
        return result

    # -- paho callbacks (paho's thread; thin, never raising) ------------------------------

    def _on_connect(
        self, client: mqtt.Client, _userdata: object, _flags: object, reason_code: Any, _properties: object
    ) -> None:
        try:
            if reason_code.is_failure:
                self.state = BrokerState.REFUSED
                log.error(
                    "mqtt broker refused the connection: %s (check user %s and MQTT_PORTAL_PASSWORD)",
                    reason_code,
                    self.settings.mqtt_username,
                )
                return
            self.state = BrokerState.CONNECTED
            log.info("mqtt connected; subscribing to %s", self.subscription)
            client.subscribe(self.subscription, qos=SUBSCRIBE_QOS)
        except Exception:
            log.exception("mqtt on_connect failed")

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: object) -> None:
        self.state = BrokerState.DISCONNECTED
        log.warning(
            "mqtt broker unreachable at %s:%s; retrying", self.settings.mqtt_host, self.settings.mqtt_port
        )

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: object, _flags: object, reason_code: Any, _properties: object
    ) -> None:
        refused = self.state is BrokerState.REFUSED
        self.state = BrokerState.REFUSED if refused else BrokerState.DISCONNECTED
        if not self._stopping and not refused:
            log.warning("mqtt disconnected: %s; reconnecting", reason_code)

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: object, _mid: int, reason_codes: Any, _properties: object
    ) -> None:
        try:
            if any(code.is_failure for code in reason_codes):
                log.error(
                    "mqtt subscription to %s refused by the broker (check the ACL of user %s)",
                    self.subscription,
                    self.settings.mqtt_username,
                )
                return
            self.state = BrokerState.SUBSCRIBED
            log.info("mqtt subscribed to %s", self.subscription)
        except Exception:
            log.exception("mqtt on_subscribe failed")

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            # paho's `topic` property raises on invalid UTF-8; the raw bytes let us count that instead.
            raw_topic = getattr(message, "_topic", None)
            self.handle(
                raw_topic if isinstance(raw_topic, bytes) else message.topic,
                message.payload,
                mid=message.mid,
                qos=message.qos,
            )
        except Exception:
            log.exception("mqtt message handling failed; message skipped")


def _topic_for_log(topic: bytes | str, limit: int = 200) -> str:
    text = topic.decode("utf-8", "backslashreplace") if isinstance(topic, bytes) else topic
    shown = repr(text[:limit])
    return shown + "..." if len(text) > limit else shown
