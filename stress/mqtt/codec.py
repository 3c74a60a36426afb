"""MQTT 3.1.1 and 5.0 packets: what a fleet of simulated devices sends and reads.

The framing (remaining length, strings, splitting a stream) is the lab's one copy in
:mod:`wire.mqtt`. Encoding is written for the hot path. A device's topics are encoded once
(:class:`TopicCode`); a PUBLISH is then a few byte concatenations with table lookups
for the remaining length and the packet id. Decoding splits a byte stream into packets
(:class:`PacketReader`) and parses the few packet types a client receives.

Only client-side packets are encoded (CONNECT, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP,
SUBSCRIBE, PINGREQ, DISCONNECT); the tests in ``tests/stress/mqtt`` check them against the real
broker.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from wire.mqtt import (
    MAX_REMAINING_LENGTH,
    ProtocolError,
    binary,
    read_varint,
    remaining,
    split,
    utf8,
    varint,
)

MQTT311 = 4
MQTT5 = 5
VERSIONS = {"3.1.1": MQTT311, "5": MQTT5}


class PacketType(IntEnum):
    """The packet type in the high nibble of a packet's first byte."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


# ---------------------------------------------------------------------------- encoding


_PACKET_ID = [n.to_bytes(2, "big") for n in range(65_536)]
#: Set in the key of a QoS 2 header (above any payload length; QoS 1 keys are negative).
QOS2_KEY = 1 << 28
#: A PUBLISH's first byte by ``qos << 1 | retain``.
_PUBLISH_FIRST = [bytes((0x30 | flags,)) for flags in range(6)]


class Property(IntEnum):
    """MQTT 5 property identifiers this client sends or reads."""

    PAYLOAD_FORMAT = 0x01
    MESSAGE_EXPIRY = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_ID = 0x0B
    SESSION_EXPIRY = 0x11
    ASSIGNED_CLIENT_ID = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTH_METHOD = 0x15
    AUTH_DATA = 0x16
    REQUEST_PROBLEM_INFO = 0x17
    WILL_DELAY = 0x18
    REQUEST_RESPONSE_INFO = 0x19
    RESPONSE_INFO = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUB_AVAILABLE = 0x28
    SUB_ID_AVAILABLE = 0x29
    SHARED_SUB_AVAILABLE = 0x2A


_BYTE, _INT2, _INT4, _VARINT_T, _STRING, _BINARY, _PAIR = range(7)
_PROPERTY_TYPES = {
    Property.PAYLOAD_FORMAT: _BYTE,
    Property.MESSAGE_EXPIRY: _INT4,
    Property.CONTENT_TYPE: _STRING,
    Property.RESPONSE_TOPIC: _STRING,
    Property.CORRELATION_DATA: _BINARY,
    Property.SUBSCRIPTION_ID: _VARINT_T,
    Property.SESSION_EXPIRY: _INT4,
    Property.ASSIGNED_CLIENT_ID: _STRING,
    Property.SERVER_KEEP_ALIVE: _INT2,
    Property.AUTH_METHOD: _STRING,
    Property.AUTH_DATA: _BINARY,
    Property.REQUEST_PROBLEM_INFO: _BYTE,
    Property.WILL_DELAY: _INT4,
    Property.REQUEST_RESPONSE_INFO: _BYTE,
    Property.RESPONSE_INFO: _STRING,
    Property.SERVER_REFERENCE: _STRING,
    Property.REASON_STRING: _STRING,
    Property.RECEIVE_MAXIMUM: _INT2,
    Property.TOPIC_ALIAS_MAXIMUM: _INT2,
    Property.TOPIC_ALIAS: _INT2,
    Property.MAXIMUM_QOS: _BYTE,
    Property.RETAIN_AVAILABLE: _BYTE,
    Property.USER_PROPERTY: _PAIR,
    Property.MAXIMUM_PACKET_SIZE: _INT4,
    Property.WILDCARD_SUB_AVAILABLE: _BYTE,
    Property.SUB_ID_AVAILABLE: _BYTE,
    Property.SHARED_SUB_AVAILABLE: _BYTE,
}


def encode_properties(properties: dict[Property, Any]) -> bytes:
    """An MQTT 5 property block, its length first."""
    out = bytearray()
    for key, value in properties.items():
        kind = _PROPERTY_TYPES[key]
        out.append(key)
        if kind == _BYTE:
            out.append(value)
        elif kind == _INT2:
            out += struct.pack("!H", value)
        elif kind == _INT4:
            out += struct.pack("!I", value)
        elif kind == _VARINT_T:
            out += varint(value)
        elif kind == _STRING:
            out += utf8(value)
        elif kind == _BINARY:
            out += binary(value)
        else:
            out += utf8(value[0]) + utf8(value[1])
    return varint(len(out)) + bytes(out)


@dataclass(frozen=True)
class Will:
    """The Last Will: what the broker publishes for a client whose connection ends uncleanly."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class ConnectOptions:
    """What a CONNECT says: who connects, how, and for how long the session lives."""

    client_id: str
    username: str | None = None
    password: str | None = None
    keepalive: int = 60
    clean: bool = True
    version: int = MQTT311
    #: MQTT 5 only: how many QoS 1 messages the client accepts at once.
    receive_maximum: int | None = None
    #: MQTT 5 only: seconds the broker keeps the session after a disconnect.
    session_expiry: int = 0
    #: Published by the broker if the connection ends without a DISCONNECT.
    will: Will | None = None


def _will_flags(will: Will | None) -> int:
    """The CONNECT flags of a will: present, its QoS, retained."""
    if will is None:
        return 0
    if will.qos not in (0, 1, 2):
        raise ValueError("a will's QoS is 0, 1 or 2")
    return 0x04 | will.qos << 3 | (0x20 if will.retain else 0)


def connect(options: ConnectOptions) -> bytes:
    """The CONNECT packet for ``options``."""
    if options.version not in (MQTT311, MQTT5):
        raise ValueError(f"unknown MQTT protocol level {options.version}")
    if not 0 <= options.keepalive <= 65_535:
        raise ValueError("keep-alive must be 0..65535 seconds")
    will = options.will
    flags = (0x02 if options.clean else 0) | _will_flags(will)
    if options.username is not None:
        flags |= 0x80
    if options.password is not None:
        flags |= 0x40
    body = utf8("MQTT") + bytes((options.version, flags)) + struct.pack("!H", options.keepalive)
    if options.version == MQTT5:
        properties: dict[Property, Any] = {}
        if options.session_expiry:
            properties[Property.SESSION_EXPIRY] = options.session_expiry
        if options.receive_maximum is not None:
            properties[Property.RECEIVE_MAXIMUM] = options.receive_maximum
        body += encode_properties(properties)
    body += utf8(options.client_id)
    if will is not None:
        if options.version == MQTT5:
            body += encode_properties({})
        body += utf8(will.topic) + binary(will.payload)
    if options.username is not None:
        body += utf8(options.username)
    if options.password is not None:
        body += binary(options.password.encode())
    return b"\x10" + varint(len(body)) + body


class TopicCode:
    """One topic, encoded once, from which PUBLISH packets are built cheaply.

    The bytes before the payload (or before the packet id, at QoS 1 and 2) are kept per payload
    length, so ``append`` costs one dictionary lookup and no concatenation (the caller joins
    the pieces of a whole write at once). :class:`SampleCode` goes further for QoS 0.
    """

    __slots__ = ("_after_id", "_heads", "_topic_field", "topic", "version")

    #: Payload lengths whose headers a topic keeps (payloads of a series rarely vary more).
    MAX_HEADS = 64

    def __init__(self, topic: str, version: int = MQTT311) -> None:
        if not topic:
            raise ValueError("a topic cannot be empty")
        if "+" in topic or "#" in topic:
            raise ValueError(f"a topic to publish to cannot hold wildcards: {topic!r}")
        self.topic = topic
        self.version = version
        self._topic_field = utf8(topic)
        # MQTT 5 puts a property block (here empty) after the topic and packet id
        self._after_id = b"\x00" if version == MQTT5 else b""
        #: Headers by payload length ``n``: ``n`` at QoS 0, ``~n`` at QoS 1, ``n | QOS2_KEY`` at QoS 2.
        self._heads: dict[int, bytes] = {}

    def publish(self, payload: bytes, qos: int = 0, packet_id: int = 0, *, retain: bool = False) -> bytes:
        """One PUBLISH of ``payload`` to this topic (``packet_id`` only at QoS 1 and 2)."""
        topic = self._topic_field
        after = self._after_id
        if qos:
            length = len(topic) + 2 + len(after) + len(payload)
            first = _PUBLISH_FIRST[qos << 1 | retain]
            return first + remaining(length) + topic + _PACKET_ID[packet_id] + after + payload
        length = len(topic) + len(after) + len(payload)
        first = b"\x31" if retain else b"\x30"
        return first + remaining(length) + topic + after + payload

    def append(self, out: list[bytes], payload: bytes, packet_id: int = 0) -> None:
        """Append the pieces of one PUBLISH of ``payload`` to ``out``: QoS 1 with a ``packet_id``, else QoS 0.

        ``b"".join(out)`` is then the same bytes as ``publish`` gives.
        """
        if packet_id:
            out.append(self._heads.get(~len(payload)) or self.header(len(payload), 1))
            out.append(_PACKET_ID[packet_id])
            if self._after_id:
                out.append(self._after_id)
        else:
            out.append(self._heads.get(len(payload)) or self.header(len(payload), 0))
        out.append(payload)

    def append_qos2(self, out: list[bytes], payload: bytes, packet_id: int) -> None:
        """Append the pieces of one QoS 2 PUBLISH of ``payload`` to ``out`` (as ``append`` does at QoS 1)."""
        out.append(self._heads.get(len(payload) | QOS2_KEY) or self.header(len(payload), 2))
        out.append(_PACKET_ID[packet_id])
        if self._after_id:
            out.append(self._after_id)
        out.append(payload)

    def header(self, payload_length: int, qos: int = 0) -> bytes:
        """The bytes of a PUBLISH before its packet id (QoS 1 and 2) or its payload (QoS 0)."""
        heads = self._heads
        key = payload_length if not qos else ~payload_length if qos == 1 else payload_length | QOS2_KEY
        head = heads.get(key)
        if head is not None:
            return head
        topic = self._topic_field
        after = self._after_id
        if qos:
            first = b"\x34" if qos == 2 else b"\x32"
            head = first + remaining(len(topic) + 2 + len(after) + payload_length) + topic
        else:
            head = b"\x30" + remaining(len(topic) + len(after) + payload_length) + topic + after
        if len(heads) < self.MAX_HEADS:
            heads[key] = head
        return head


class SampleCode:
    """The topics of one sample (what a device publishes at one instant), encoded once.

    ``publish`` gives the sample's QoS 0 PUBLISH packets as one run of bytes, for one write:
    a single ``%`` formatting of a template kept per combination of payload lengths (each
    header's remaining length depends on its payload's). It is the hot path of a steady
    QoS 0 run.
    """

    __slots__ = ("_slots", "_templates", "topics")

    #: Combinations of payload lengths a sample keeps templates for.
    MAX_TEMPLATES = 16

    def __init__(self, topics: Iterable[TopicCode]) -> None:
        self.topics = tuple(topics)
        self._templates: dict[tuple[int, ...], bytes] = {}
        #: Per topic, what follows the remaining length (the topic, MQTT 5's empty properties)
        #: and its length; the template holds it with ``%`` escaped, then the payload's slot.
        #: Made with the first template (a device connecting does not pay for it).
        self._slots: list[tuple[int, bytes]] | None = None

    def publish(self, payloads: Sequence[bytes]) -> bytes:
        """A QoS 0 PUBLISH of each payload to its topic, in order, as one run of bytes."""
        lengths = tuple(map(len, payloads))
        template = self._templates.get(lengths)
        if template is None:
            template = self._template(lengths)
        return template % tuple(payloads)

    def _template(self, lengths: tuple[int, ...]) -> bytes:
        if self._slots is None:
            self._slots = [
                (len(tail), tail.replace(b"%", b"%%") + b"%b")
                for tail in (topic._topic_field + topic._after_id for topic in self.topics)
            ]
        template = b"".join(
            b"\x30" + remaining(size + length).replace(b"%", b"%%") + slot
            for (size, slot), length in zip(self._slots, lengths, strict=True)
        )
        if len(self._templates) < self.MAX_TEMPLATES:
            self._templates[lengths] = template
        return template


def publish(topic: str, payload: bytes, qos: int = 0, packet_id: int = 0, version: int = MQTT311) -> bytes:
    """One PUBLISH (the slow path: it encodes the topic each time)."""
    return TopicCode(topic, version).publish(payload, qos, packet_id)


def puback(packet_id: int, version: int = MQTT311) -> bytes:
    """PUBACK for an inbound QoS 1 PUBLISH (success; MQTT 5 may omit the reason code)."""
    return b"\x40\x02" + _PACKET_ID[packet_id]


def pubrec(packet_id: int) -> bytes:
    """PUBREC for an inbound QoS 2 PUBLISH: received (success, so MQTT 5's reason code is left out)."""
    return b"\x50\x02" + _PACKET_ID[packet_id]


def pubrel(packet_id: int) -> bytes:
    """PUBREL, the answer to a successful PUBREC: the message may be released to subscribers."""
    return b"\x62\x02" + _PACKET_ID[packet_id]


def pubcomp(packet_id: int) -> bytes:
    """PUBCOMP, the answer to a PUBREL: the QoS 2 exchange of an inbound message is over."""
    return b"\x70\x02" + _PACKET_ID[packet_id]


def receipt(message: Publish) -> bytes:
    """What acknowledges an inbound ``message``: PUBACK at QoS 1, PUBREC at QoS 2 (nothing at 0)."""
    if message.qos == 2:
        return pubrec(message.packet_id)
    return puback(message.packet_id) if message.qos else b""


def subscribe(packet_id: int, filters: Iterable[tuple[str, int]], version: int = MQTT311) -> bytes:
    """SUBSCRIBE to ``(filter, qos)`` pairs."""
    body = bytearray(_PACKET_ID[packet_id])
    if version == MQTT5:
        body.append(0)  # no properties
    count = 0
    for topic_filter, qos in filters:
        if not topic_filter:
            raise ValueError("a topic filter cannot be empty")
        body += utf8(topic_filter) + bytes((qos,))
        count += 1
    if not count:
        raise ValueError("SUBSCRIBE needs at least one topic filter")
    return b"\x82" + varint(len(body)) + bytes(body)


PINGREQ = b"\xc0\x00"


def disconnect(version: int = MQTT311, reason: int = 0) -> bytes:
    """DISCONNECT (MQTT 5 carries a reason code; 0 is a normal disconnection)."""
    if version == MQTT5 and reason:
        return b"\xe0\x01" + bytes((reason,))
    return b"\xe0\x00"


# ---------------------------------------------------------------------------- decoding


class PacketReader:
    """Splits a byte stream into packets: ``(first byte, body)`` pairs, bodies as ``bytes``."""

    __slots__ = ("_buffer", "max_packet")

    def __init__(self, max_packet: int = MAX_REMAINING_LENGTH) -> None:
        self._buffer = bytearray()
        self.max_packet = max_packet

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add ``data``; return every packet now complete (raises :class:`ProtocolError`)."""
        self._buffer += data
        return split(self._buffer, self.max_packet)


def _read_string(data: bytes, offset: int) -> tuple[str, int]:
    raw, offset = _read_binary(data, offset)
    try:
        return raw.decode(), offset
    except UnicodeDecodeError as exc:
        raise ProtocolError("a string is not valid UTF-8") from exc


def _read_binary(data: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 2 > len(data):
        raise ProtocolError("truncated length")
    size = int.from_bytes(data[offset : offset + 2], "big")
    end = offset + 2 + size
    if end > len(data):
        raise ProtocolError("truncated string or binary data")
    return bytes(data[offset + 2 : end]), end


def read_properties(data: bytes, offset: int) -> tuple[dict[int, Any], int]:
    """An MQTT 5 property block at ``offset``: ``(properties, offset after it)``.

    User properties (which may repeat) are collected in a list of pairs.
    """
    length, offset = read_varint(data, offset)
    end = offset + length
    if end > len(data):
        raise ProtocolError("property block longer than the packet")
    block = bytes(data[:end])  # reads past the block's end now fail as truncation
    properties: dict[int, Any] = {}
    while offset < end:
        key = block[offset]
        kind = _PROPERTY_TYPES.get(key)  # type: ignore[call-overload]
        if kind is None:
            raise ProtocolError(f"unknown property 0x{key:02x}")
        value, offset = _read_property(kind, block, offset + 1)
        if kind == _PAIR:
            properties.setdefault(key, []).append(value)
        else:
            properties[key] = value
    return properties, end


_FIXED_SIZES = {_BYTE: 1, _INT2: 2, _INT4: 4}


def _read_property(kind: int, block: bytes, offset: int) -> tuple[Any, int]:
    size = _FIXED_SIZES.get(kind)
    if size is not None:
        if offset + size > len(block):
            raise ProtocolError("truncated property")
        return int.from_bytes(block[offset : offset + size], "big"), offset + size
    if kind == _VARINT_T:
        return read_varint(block, offset)
    if kind == _STRING:
        return _read_string(block, offset)
    if kind == _BINARY:
        return _read_binary(block, offset)
    name, offset = _read_string(block, offset)
    text, offset = _read_string(block, offset)
    return (name, text), offset


@dataclass(frozen=True)
class Connack:
    """The broker's answer to CONNECT."""

    session_present: bool
    code: int
    properties: dict[int, Any] = field(default_factory=dict)


def parse_connack(body: bytes, version: int) -> Connack:
    """Parse a CONNACK body."""
    if len(body) < 2:
        raise ProtocolError("CONNACK shorter than two bytes")
    properties: dict[int, Any] = {}
    if version == MQTT5 and len(body) > 2:
        properties, _ = read_properties(body, 2)
    return Connack(bool(body[0] & 0x01), body[1], properties)


@dataclass(frozen=True)
class Publish:
    """An inbound PUBLISH."""

    topic: str
    payload: bytes
    qos: int
    packet_id: int
    retain: bool
    dup: bool
    properties: dict[int, Any] = field(default_factory=dict)


def parse_publish(first: int, body: bytes, version: int) -> Publish:
    """Parse a PUBLISH body (``first`` is the packet's first byte, with its flags)."""
    qos = (first >> 1) & 0x03
    if qos == 3:
        raise ProtocolError("PUBLISH with QoS 3")
    topic, offset = _read_string(body, 0)
    packet_id = 0
    if qos:
        if offset + 2 > len(body):
            raise ProtocolError("PUBLISH without its packet id")
        packet_id = int.from_bytes(body[offset : offset + 2], "big")
        offset += 2
    properties: dict[int, Any] = {}
    if version == MQTT5:
        properties, offset = read_properties(body, offset)
    return Publish(topic, body[offset:], qos, packet_id, bool(first & 0x01), bool(first & 0x08), properties)


def parse_ack(body: bytes, version: int) -> tuple[int, int]:
    """PUBACK, PUBREC, PUBREL or PUBCOMP (or SUBACK's id): ``(packet id, reason code)``; MQTT
    3.1.1 acks always succeed."""
    if len(body) < 2:
        raise ProtocolError("acknowledgement shorter than two bytes")
    packet_id = (body[0] << 8) | body[1]
    reason = body[2] if version == MQTT5 and len(body) > 2 else 0
    return packet_id, reason


def parse_suback(body: bytes, version: int) -> tuple[int, list[int]]:
    """SUBACK: ``(packet id, granted QoS or reason code per filter)``."""
    if len(body) < 3:
        raise ProtocolError("SUBACK too short")
    packet_id = (body[0] << 8) | body[1]
    offset = 2
    if version == MQTT5:
        _, offset = read_properties(body, offset)
    return packet_id, list(body[offset:])


def parse_disconnect(body: bytes, version: int) -> tuple[int, dict[int, Any]]:
    """A DISCONNECT from the broker (MQTT 5): ``(reason code, properties)``."""
    if version != MQTT5 or not body:
        return 0, {}
    properties: dict[int, Any] = {}
    if len(body) > 1:
        properties, _ = read_properties(body, 1)
    return body[0], properties
