"""The portal's MQTT client: paho-mqtt with a faster read path and batched acknowledgements.

paho reads each packet with several small ``recv`` calls and routes every message through its
per-topic callback table; at tens of thousands of messages per second that is most of the portal's
CPU. :class:`PortalClient` keeps paho for everything (connection, session, keepalive, reconnects,
QoS 2, MQTT 5) but serves reads from one large ``recv`` and decodes QoS 0/1 PUBLISH packets of
MQTT 3.1.1 itself, then acknowledges a whole committed batch in one write. It relies on a few of
paho's internals, hence the ``paho-mqtt<3`` pin; tests/web/test_mqtt_client.py feeds identical byte
streams to it and to stock paho and requires identical deliveries.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from wire.mqtt import ProtocolError, frame


class BufferedSocket:
    """A socket whose reads are served from one large ``recv``.

    paho reads each packet with three or more ``recv`` calls (1 byte of type, the length byte by
    byte, then the body); at tens of thousands of messages a second those system calls cost more
    than everything else the portal does per message. ``pending`` tells paho's loop that bytes are
    waiting here, exactly as it does for TLS sockets.
    """

    READ_SIZE = 256 * 1024

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._data = b""
        self._pos = 0

    def recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` bytes, from the buffer or one big read (raises BlockingIOError as sockets do)."""
        if self._pos >= len(self._data):
            self._data = self._sock.recv(max(bufsize, self.READ_SIZE))
            self._pos = 0
        chunk = self._data[self._pos : self._pos + bufsize]
        self._pos += len(chunk)
        return chunk

    def pending(self) -> int:
        """Bytes received but not yet read."""
        inner = getattr(self._sock, "pending", None)
        return len(self._data) - self._pos + (inner() if inner is not None else 0)

    def take_publish(self) -> tuple[int, bytes, bytes, int] | None:
        """Remove one complete QoS 0 or 1 PUBLISH packet (MQTT 3.1.1) from the head of the buffer.

        Returns:
            ``(first byte, topic, payload, packet id)``, or ``None`` when the head is anything else
            (another packet type, QoS 2, an incomplete or malformed packet), which paho then reads
            its own way.
        """
        data, pos, end = self._data, self._pos, len(self._data)
        if end - pos < 4:
            return None
        header = data[pos]
        qos = (header >> 1) & 3
        if header >> 4 != _PUBLISH_TYPE or qos > 1:
            return None
        try:
            found = frame(data, pos, end)
        except ProtocolError:  # a length longer than MQTT allows: paho reports it
            found = None
        if found is None or found[1] - found[0] < 2:
            return None
        index, body_end = found
        topic_end = index + 2 + ((data[index] << 8) | data[index + 1])
        payload_start = topic_end + 2 * qos
        if topic_end == index + 2 or payload_start > body_end:
            return None  # empty topic or truncated header: paho reports the protocol error
        mid = (data[topic_end] << 8) | data[topic_end + 1] if qos else 0
        self._pos = body_end
        return header, data[index + 2 : topic_end], data[payload_start:body_end], mid

    def send(self, data: bytes | bytearray) -> int:
        """Send like the socket."""
        return int(self._sock.send(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)  # fileno, setblocking, close...


class InboundMessage:
    """A received PUBLISH with the attributes of :class:`paho.mqtt.client.MQTTMessage` ingest reads.

    paho's own message object also builds a delivery-tracking ``MQTTMessageInfo`` (with its lock and
    condition) that only outgoing messages use: a tenth of the portal's CPU at a few thousand
    messages a second.
    """

    __slots__ = ("_topic", "dup", "mid", "payload", "qos", "retain", "timestamp")

    def __init__(self, header: int, topic: bytes, payload: bytes, mid: int) -> None:
        self._topic = topic
        self.payload = payload
        self.mid = mid
        self.dup = bool(header & 0x08)
        self.qos = (header >> 1) & 3
        self.retain = bool(header & 0x01)
        self.timestamp = time.monotonic()

    @property
    def topic(self) -> str:
        """The topic as text (raises ``UnicodeDecodeError`` on invalid UTF-8, as paho's does)."""
        return self._topic.decode("utf-8")


_PUBLISH_TYPE = 3
_PUBACK = 0x40
_PUBACK_PACKET = struct.Struct("!BBH")


class PortalClient(mqtt.Client):
    """paho's client, made fast enough for tens of thousands of messages a second.

    paho handles connecting, keepalive, subscribing and reconnecting. Three hot paths are replaced:

    * reads are batched (:class:`BufferedSocket`);
    * QoS 0/1 PUBLISH packets already in the buffer are decoded here and handed to ``on_message``
      as an :class:`InboundMessage` with the attributes paho's message would have, without paho's per-packet
      bookkeeping, debug formatting and per-topic callback matching; every other packet (and any
      PUBLISH that is incomplete, QoS 2 or malformed) still goes through paho;
    * :meth:`ack_many` queues one write for a whole batch of PUBACKs, where ``ack()`` queues one
      packet (and wakes the loop) per message.

    They use paho internals that have not changed through paho-mqtt 2.x (pinned below 3 in
    pyproject.toml); tests/web/test_ingest.py checks them against byte streams and tests/web's
    integration tests against the real broker.
    """

    #: Most packets handled per wake-up of paho's loop, so PUBACKs and pings still go out in time.
    READ_BURST = 2000
    #: Packets handled between two yields to the rest of the process. Served by gevent, the portal
    #: runs every task in one thread: a burst would otherwise hold up browser pushes and the writer.
    YIELD_EVERY = 100

    def _create_socket(self) -> Any:
        return BufferedSocket(super()._create_socket())

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Handle every complete packet already received (paho handles one per loop otherwise)."""
        sock = self._sock
        if self._protocol == mqtt.MQTTv5 or not isinstance(sock, BufferedSocket):
            return super().loop_read(max_packets)
        buffered: BufferedSocket = sock
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        for count in range(1, self.READ_BURST + 1):
            if self._in_packet["command"] == 0:  # paho is not halfway through a packet
                publish = buffered.take_publish()
                if publish is not None:
                    self._deliver(*publish)
                    if count % self.YIELD_EVERY == 0:
                        time.sleep(0)  # a yield under gevent; lets another thread take the GIL otherwise
                    continue
            rc = super().loop_read(1)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._sock is not buffered or not buffered.pending():
                break
        return rc

    def _deliver(self, header: int, topic: bytes, payload: bytes, mid: int) -> None:
        self._handle_on_message(InboundMessage(header, topic, payload, mid))

    def _handle_on_message(self, message: mqtt.MQTTMessage | InboundMessage) -> None:
        # No per-topic callbacks are registered: skip paho's topic-filter matching, a trie walk and a
        # topic decode per message. Ingest's on_message never raises.
        on_message = self.on_message
        if on_message is not None:
            with self._in_callback_mutex:
                # An InboundMessage stands in for paho's message: it has every attribute ingest reads.
                on_message(self, self._userdata, cast(mqtt.MQTTMessage, message))

    def ack_many(self, mids: Iterable[int]) -> None:
        """Acknowledge QoS 1 messages (``manual_ack``) with one queued write for all of them."""
        packet = b"".join([_PUBACK_PACKET.pack(_PUBACK, 2, mid) for mid in mids])
        if packet:
            self._packet_queue(_PUBACK, packet, 0, 0)
