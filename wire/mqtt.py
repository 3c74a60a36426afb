"""MQTT framing, once for the whole lab: the remaining length, strings, packets split off a stream.

Every MQTT packet is a first byte (type and flags), the length of the rest as a variable-length
integer of one to four bytes (7 bits each, the high bit set on all but the last), and the rest.
Strings and binary data carry a two-byte length. The encoders here are on the stress tool's hot
path (a table holds every one- and two-byte length); :func:`split` is how every reader of a
stream takes whole packets off it.

Also here: the few MQTT 3.1.1 packets a probe or a load tool writes (CONNECT, SUBSCRIBE, PUBLISH),
for the launcher's health probe, the benchmarks and the tests. The stress tool builds its own
(MQTT 5 properties, wills, pre-encoded topics) on the same framing.
"""

from __future__ import annotations

import struct

from wire.errors import WireError

#: The largest remaining length four bytes of variable-length integer hold.
MAX_REMAINING_LENGTH = 268_435_455
#: Most bytes in an MQTT string or binary field.
MAX_STRING = 65_535


class ProtocolError(WireError):
    """The peer sent bytes that are not MQTT."""


# ---------------------------------------------------------------------------- encoding


def varint(value: int) -> bytes:
    """The variable-length integer encoding (remaining length, MQTT 5 property lengths)."""
    if not 0 <= value <= MAX_REMAINING_LENGTH:
        raise ValueError(f"{value} does not fit a variable-length integer")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


_VARINT = [varint(n) for n in range(16_384)]  # every one- and two-byte length


def remaining(length: int) -> bytes:
    """:func:`varint` from a table for the lengths most packets have."""
    return _VARINT[length] if length < 16_384 else varint(length)


def utf8(text: str) -> bytes:
    """A UTF-8 string with its two-byte length."""
    return binary(text.encode())


def binary(data: bytes) -> bytes:
    """Binary data with its two-byte length."""
    if len(data) > MAX_STRING:
        raise ValueError(f"an MQTT string or binary field holds at most {MAX_STRING:,} bytes")
    return struct.pack("!H", len(data)) + data


def packet(first: int, body: bytes) -> bytes:
    """A whole packet: its first byte, the remaining length, the body."""
    return bytes([first]) + remaining(len(body)) + body


# ---------------------------------------------------------------------------- decoding


def read_varint(data: bytes | bytearray, offset: int) -> tuple[int, int]:
    """The variable-length integer at ``offset``: ``(value, offset after it)``.

    Raises:
        ProtocolError: truncated, or longer than four bytes.
    """
    value, shift = 0, 0
    while True:
        if offset >= len(data):
            raise ProtocolError("truncated variable-length integer")
        byte = data[offset]
        value |= (byte & 0x7F) << shift
        offset += 1
        if not byte & 0x80:
            return value, offset
        shift += 7
        if shift > 21:
            raise ProtocolError("variable-length integer longer than four bytes")


def frame(
    data: bytes | bytearray, start: int, end: int, max_packet: int = MAX_REMAINING_LENGTH
) -> tuple[int, int] | None:
    """The packet starting at ``data[start]``, if ``data[:end]`` holds all of it.

    Returns:
        ``(body start, body end)``, or None while the packet is incomplete.

    Raises:
        ProtocolError: the remaining length is longer than four bytes, or over ``max_packet``.
    """
    length, shift, at = 0, 0, start + 1
    while at < end:
        byte = data[at]
        at += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if length > max_packet:
                raise ProtocolError(f"packet of {length} bytes is over the limit of {max_packet}")
            return (at, at + length) if at + length <= end else None
        shift += 7
        if shift > 21:
            raise ProtocolError("remaining length longer than four bytes")
    return None


def split(buffer: bytearray, max_packet: int = MAX_REMAINING_LENGTH) -> list[tuple[int, bytes]]:
    """Take every complete packet off the front of ``buffer``: ``[(first byte, body), ...]``.

    Raises:
        ProtocolError: a remaining length longer than four bytes, or over ``max_packet``.
    """
    packets: list[tuple[int, bytes]] = []
    offset, end = 0, len(buffer)
    while end - offset >= 2:
        found = frame(buffer, offset, end, max_packet)
        if found is None:
            break
        start, stop = found
        packets.append((buffer[offset], bytes(buffer[start:stop])))
        offset = stop
    if offset:
        del buffer[:offset]
    return packets


# ---------------------------------------------------------------------------- a probe's packets


def connect_packet(client_id: str, user: str, password: str, keepalive: int = 60) -> bytes:
    """CONNECT: protocol level 4 (3.1.1), clean session, username and password."""
    body = utf8("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", keepalive)
    return packet(0x10, body + utf8(client_id) + utf8(user) + utf8(password))


def subscribe_packet(topic_filter: str) -> bytes:
    """SUBSCRIBE (packet id 1) to one filter at QoS 0: the broker's fastest delivery."""
    return packet(0x82, struct.pack("!H", 1) + utf8(topic_filter) + b"\x00")


def publish_packet(
    topic: bytes, payload: bytes, qos: int = 0, packet_id: int = 0, *, retain: bool = False, dup: bool = False
) -> bytes:
    """PUBLISH; the packet id is written only for QoS 1 and 2."""
    body = binary(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return packet(0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0), body)


def publish_payload(first: int, body: bytes) -> bytes:
    """The payload of a PUBLISH body (MQTT 3.1.1: no properties)."""
    topic_length = struct.unpack_from("!H", body)[0]
    start = 2 + topic_length + (2 if first & 0x06 else 0)
    return body[start:]
