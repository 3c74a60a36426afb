"""MQTT ingest: the portal's broker client, in its own thread.

It connects as ``portal`` with a persistent session (MQTT 3.1.1, ``clean_session=False``, the fixed
client id ``MQTT_CLIENT_ID``) and subscribes at QoS 1 to ``<TOPIC_ROOT>/#`` and ``alarms/#`` (again
after every reconnect). Replicas of the portal share ingest: with ``MQTT_SHARE_GROUP`` set, each
subscribes to ``$share/<group>/<TOPIC_ROOT>/#`` and ``$share/<group>/alarms/#`` under its own client
id, and the broker hands each message to one of them. Acknowledgements are manual, which is what
makes delivery from broker to database at-least-once:

* a telemetry message is parsed (:func:`web.messages.parse_message`) and its
  :class:`~web.messages.Reading` put in the writer's buffer; its PUBACK goes out only after the
  batch holding it is committed (:meth:`Ingest.acknowledge`, called by the writer). A portal that
  dies before that leaves the message unacknowledged, and the broker sends it again to the next
  portal that takes the session. A full buffer blocks this thread, so the broker holds the rest;
* a rejected message is counted by reason, logged (payload truncated) and acknowledged at once:
  refusing it again later would not change the answer;
* an alarm message goes to the alarms handler (``portal.alarms``, when there is one), which stores
  it before it returns; then it is acknowledged.

A message id is only meaningful on the connection that delivered it, so readings remember their
connection and are acknowledged only on that same one. After a reconnect the broker sends the
unacknowledged ones again (stored twice: at least once, never lost).

paho-mqtt's loop thread reconnects with backoff, including when the broker is down at start.
Nothing a publisher sends can stop ingest: every callback catches everything.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from web import presence
from web.buffer import ReadingBuffer
from web.messages import Reading, parse_message, preview
from web.metrics import Metrics
from web.mqtt_client import PortalClient
from web.presence import PRESENCE_ATTR
from web.quota import DeviceQuota
from web.settings import ALARMS_ROOT, Settings
from wire.rejections import Reason, Rejection

log = logging.getLogger(__name__)

#: Seconds between keepalive pings; the broker drops us after 1.5 times this without traffic.
KEEPALIVE_S = 30
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 10
#: QoS of the subscriptions: QoS 1 publishers are delivered at least once.
SUBSCRIBE_QOS = 1
#: How long one wait for room in the buffer lasts before checking whether ingest is stopping.
PUT_WAIT_S = 0.2
#: How long an alarm that cannot be stored is retried before it is left to the broker's redelivery.
#: Less than the keepalive margin, so the broker does not drop us while we retry.
ALARM_RETRY_S = 20.0
ALARM_RETRY_MIN_S = 0.5

_ALARM_PREFIX = f"{ALARMS_ROOT}/".encode()


class AlarmHandler(Protocol):
    """What ingest hands alarm messages to (``web.alarms``); it stores the alarm before returning."""

    def handle(self, topic: str, payload: bytes) -> None: ...


class BrokerState(StrEnum):
    """Where the broker connection stands; only ``subscribed`` means ingest works."""

    DISCONNECTED = "disconnected"
    CONNECTED = "connected"
    SUBSCRIBED = "subscribed"
    REFUSED = "refused"


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


#: Numbers of broker connections, unique in the process: an acknowledgement router may hand
#: any ingest client's readings to every client, and each sends only those of its own connection.
_CONNECTIONS = itertools.count(1)


class Ingest:
    """The broker client. Build it, :meth:`start` it, :meth:`stop` it; nothing happens before start.

    Args:
        settings: broker address, password, client id and topic root.
        buffer: where readings wait for the writer; when full, this thread waits.
        metrics: where messages, rejections and the connection state are recorded.
        alarms: returns the alarms handler, or ``None`` while there is none (alarm messages are
            then only counted and acknowledged).
        clock: returns the arrival time of a message (UTC); replaceable in tests.
        quota: the cap on devices; readings of new devices past it are refused.
        stand_in: a client that takes over the session of another replica that died
            (:mod:`web.takeover`): it connects once, never reconnects (the replica that returns
            takes its session back), and leaves the broker gauge to the portal's own client.
    """

    def __init__(
        self,
        settings: Settings,
        buffer: ReadingBuffer,
        metrics: Metrics,
        *,
        alarms: Callable[[], AlarmHandler | None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        quota: DeviceQuota | None = None,
        stand_in: bool = False,
    ) -> None:
        self.settings = settings
        self.stand_in = stand_in
        #: A stand-in's last message (monotonic; it is done when none comes for a while), and how
        #: many it took.
        self.last_message = time.monotonic()
        self.taken = 0
        self.quota = quota
        self.buffer = buffer
        self.metrics = metrics
        self.alarms = alarms
        self.clock = clock
        shared = "" if settings.mqtt_share_group is None else f"$share/{settings.mqtt_share_group}/"
        self.subscriptions = [
            (f"{shared}{settings.topic_root}/#", SUBSCRIBE_QOS),
            (f"{shared}{ALARMS_ROOT}/#", SUBSCRIBE_QOS),
        ]
        self.state = BrokerState.DISCONNECTED
        self._log_budget = LogBudget()
        self._paused = False
        self._stopping = False
        self._waiting = False  # for room in the buffer
        self._client: mqtt.Client | None = None  # a PortalClient once started
        # Guards `_connection` against acknowledgements sent from the writer thread: an ack is
        # sent only while the connection that delivered the message is still the current one.
        self._ack_lock = threading.Lock()
        self._connection = next(_CONNECTIONS)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting in the background; returns at once, even if the broker is down."""
        if self._client is not None:
            return
        client = PortalClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.settings.mqtt_client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
        client.manual_ack_set(True)
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
            "mqtt connecting host=%s port=%s user=%s client_id=%s subscriptions=%s",
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            self.settings.mqtt_username,
            self.settings.mqtt_client_id,
            ",".join(topic for topic, _qos in self.subscriptions),
        )

    @property
    def connected(self) -> bool:
        """True while the broker connection is up (messages can be sent)."""
        return self._client is not None and self.state in (BrokerState.CONNECTED, BrokerState.SUBSCRIBED)

    def send(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """Publish at QoS 1 (not retained unless asked); False when the broker connection is down."""
        client = self._client
        if client is None or not self.connected:
            return False
        return client.publish(topic, payload, qos=1, retain=retain).rc == mqtt.MQTT_ERR_SUCCESS

    def pause(self) -> None:
        """Stop taking new messages but keep the connection, so committed readings can be acked.

        Messages that arrive from now on are left unacknowledged: the broker keeps them for the
        next portal that takes this session.
        """
        self._paused = True

    def stop(self) -> None:
        """Disconnect (after sending the acknowledgements already queued) and end the client thread."""
        client, self._client = self._client, None
        self._paused = self._stopping = True
        if client is None:
            return
        client.disconnect()
        client.loop_stop()
        self.state = BrokerState.DISCONNECTED
        if not self.stand_in:
            self.metrics.broker_connected.set(0)

    @property
    def stopped(self) -> bool:
        """True once stopped (or, for a stand-in, once its connection ended)."""
        return self._stopping

    def leave_group(self) -> None:
        """Unsubscribe from the topics (a stand-in, once it has drained a dead replica's queue: the
        broker then stops keeping a share of new messages for that session)."""
        client = self._client
        if client is not None:
            client.unsubscribe([topic for topic, _qos in self.subscriptions])

    @property
    def ready(self) -> bool:
        """True when connected and subscribed."""
        return self.state is BrokerState.SUBSCRIBED

    # -- acknowledgements (the writer's thread) -------------------------------------------

    def acknowledge(self, readings: Sequence[Reading]) -> None:
        """Send the PUBACKs of readings the writer is done with (committed, or refused for good).

        Readings that came over an earlier connection are skipped: the broker sends those again.
        """
        client = self._client
        if client is None:
            return
        with self._ack_lock:
            current = self._connection
            mids = [r.mid for r in readings if r.qos == 1 and r.connection == current]
            if isinstance(client, PortalClient):
                client.ack_many(mids)
            else:
                for mid in mids:
                    client.ack(mid, 1)

    # -- the handling, testable without a broker ------------------------------------------

    def handle(
        self,
        topic: bytes | str,
        payload: bytes | bytearray,
        *,
        mid: int = 0,
        qos: int = 0,
        retain: bool = False,
    ) -> Reading | Rejection | None:
        """Validate one telemetry or presence message and hand it to storage, or count and log its
        rejection. ``retain``: a retained message the broker delivered on subscribing.

        Returns:
            The :class:`Reading` now in the buffer (acknowledge it after commit), the
            :class:`Rejection` (acknowledge it now), or ``None`` when ingest stopped while
            waiting for room in the buffer (leave it unacknowledged: the broker keeps it).
        """
        result = parse_message(
            topic,
            payload,
            self.clock(),
            self.settings.topic_root,
            mid=mid,
            qos=qos,
            connection=self._connection,
        )
        if not isinstance(result, Rejection) and result.topic.attr == PRESENCE_ATTR:
            result = presence.checked(result, retained=retain)
        if isinstance(result, Rejection):
            self._reject(result, topic, payload)
            return result
        if self.quota is not None and not self.quota.admit(result.topic.room, result.topic.device):
            refused = Rejection(Reason.DEVICE_LIMIT, "a new device past the lab's cap on devices")
            self._reject(refused, topic, payload)
            return refused
        if not self.buffer.put(result, timeout=0):
            if not self._waiting:  # one line per episode, not per message
                self._waiting = True
                log.warning(
                    "storage buffer full (%s readings): ingest waits for the database", len(self.buffer)
                )
            while not self.buffer.put(result, timeout=PUT_WAIT_S):
                if self._paused:
                    return None
        elif self._waiting:
            self._waiting = False
            log.info("storage buffer has room again; ingest resumed")
        self.metrics.ingest_messages.inc()
        return result

    def handle_alarm(self, topic: bytes | str, payload: bytes | bytearray) -> bool:
        """Pass one alarm message to the alarms handler; True once it is stored (or there is none).

        A handler that keeps failing (database down) is retried for :data:`ALARM_RETRY_S`; after
        that the message is left unacknowledged and the broker delivers it again on reconnect.
        """
        self.metrics.alarms_received.inc()
        if isinstance(topic, bytes | bytearray):
            try:
                topic = bytes(topic).decode("utf-8")
            except UnicodeDecodeError:
                self._reject(Rejection(Reason.TOPIC_UTF8, "alarm topic is not valid UTF-8"), topic, payload)
                return True
        delay = ALARM_RETRY_MIN_S
        deadline = time.monotonic() + ALARM_RETRY_S
        while True:
            handler = self.alarms()
            if handler is None:
                return True
            try:
                handler.handle(topic, bytes(payload))
            except Exception:
                if self._paused or time.monotonic() + delay > deadline:
                    log.exception("alarm not stored, left for redelivery topic=%s", _topic_for_log(topic))
                    return False
                log.warning("alarm not stored, retrying in %ss topic=%s", delay, _topic_for_log(topic))
                time.sleep(delay)
                delay *= 2
            else:
                return True

    def _reject(self, rejection: Rejection, topic: bytes | str, payload: bytes | bytearray) -> None:
        self.metrics.ingest_rejected.labels(reason=str(rejection.reason)).inc()
        allowed, suppressed = self._log_budget.take(time.monotonic())
        if allowed:
            if suppressed:
                log.warning("%s more rejected messages were not logged", suppressed)
            log.warning(
                "message rejected reason=%s detail=%s topic=%s payload=%s",
                rejection.reason,
                rejection.detail,
                _topic_for_log(topic),
                preview(payload),
            )

    # -- paho callbacks (paho's thread; thin, never raising) ------------------------------

    def _on_connect(
        self, client: mqtt.Client, _userdata: object, flags: Any, reason_code: Any, _properties: object
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
            with self._ack_lock:
                self._connection = next(_CONNECTIONS)
            self.state = BrokerState.CONNECTED
            resumed = bool(getattr(flags, "session_present", False))
            log.info("mqtt connected session_present=%s; subscribing", resumed)
            # Always subscribe: a broker that lost its state (restarted without saving) lost the
            # subscriptions too. The only cost is that retained alarms are delivered again.
            client.subscribe(self.subscriptions)
        except Exception:
            log.exception("mqtt on_connect failed")

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: object) -> None:
        self.state = BrokerState.DISCONNECTED
        log.warning(
            "mqtt broker unreachable at %s:%s; retrying", self.settings.mqtt_host, self.settings.mqtt_port
        )

    def _on_disconnect(
        self, client: mqtt.Client, _userdata: object, _flags: object, reason_code: Any, _properties: object
    ) -> None:
        with self._ack_lock:
            self._connection = next(_CONNECTIONS)  # message ids of the old connection mean nothing now
        refused = self.state is BrokerState.REFUSED
        self.state = BrokerState.REFUSED if refused else BrokerState.DISCONNECTED
        if self.stand_in:
            if not self._stopping:  # taken back by its replica, or the broker went: not ours to retry
                who = self.settings.mqtt_client_id
                log.warning("mqtt stand-in for %s disconnected: %s", who, reason_code)
                self._stopping = self._paused = True
                client.disconnect()  # ends paho's loop rather than reconnecting
            return
        self.metrics.broker_connected.set(0)
        if not self._stopping and not refused:
            log.warning("mqtt disconnected: %s; reconnecting", reason_code)

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: object, _mid: int, reason_codes: Any, _properties: object
    ) -> None:
        try:
            codes = list(reason_codes)
            if not codes or codes[0].is_failure:
                log.error(
                    "mqtt subscription to %s refused by the broker (check the ACL of user %s)",
                    self.subscriptions[0][0],
                    self.settings.mqtt_username,
                )
                return
            if len(codes) > 1 and codes[1].is_failure:
                log.error(
                    "mqtt subscription to %s refused: alarms will not be stored", self.subscriptions[1][0]
                )
            self.state = BrokerState.SUBSCRIBED
            if self.stand_in:
                self.last_message = time.monotonic()  # its quiet is counted from here
            else:
                self.metrics.broker_connected.set(1)
            log.info("mqtt subscribed to %s", ",".join(topic for topic, _qos in self.subscriptions))
        except Exception:
            log.exception("mqtt on_subscribe failed")

    def _on_message(self, client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        if self._paused:
            return  # not acknowledged: the broker keeps it for the next session
        if self.stand_in:  # (the portal's own client, on the hot path, keeps no such count)
            self.last_message = time.monotonic()
            self.taken += 1
        done = True
        try:
            # paho's `topic` property raises on invalid UTF-8; the raw bytes let us count that instead.
            raw_topic = getattr(message, "_topic", None)
            topic: bytes = raw_topic if isinstance(raw_topic, bytes) else message.topic.encode()
            if topic.startswith(_ALARM_PREFIX):
                done = self.handle_alarm(topic, message.payload)
            elif not message.payload and presence.is_presence(topic, self.settings.topic_root):
                log.debug("retained presence deleted topic=%.200r", topic)  # a device removed
            else:
                result = self.handle(
                    topic, message.payload, mid=message.mid, qos=message.qos, retain=bool(message.retain)
                )
                done = isinstance(result, Rejection)  # readings are acknowledged after commit
        except Exception:
            log.exception("mqtt message handling failed; message skipped")
        if done:
            try:
                client.ack(message.mid, message.qos)
            except Exception:
                log.exception("mqtt acknowledgement failed")


def _topic_for_log(topic: bytes | bytearray | str, limit: int = 200) -> str:
    text = bytes(topic).decode("utf-8", "backslashreplace") if not isinstance(topic, str) else topic
    shown = repr(text[:limit])
    return shown + "..." if len(text) > limit else shown
