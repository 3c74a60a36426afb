"""Just enough MQTT 3.1.1 to write the few packets a probe or a load tool sends, and read PUBLISH.

Standard library only: the launcher's health probe uses it before the project's environment
exists; the benchmarks use it because a pre-encoded packet costs far less than a client library's
per-message Python; the tests use it to build exact byte streams.
"""

from __future__ import annotations

import struct


def remaining_length(size: int) -> bytes:
    """The variable-length encoding of a packet's remaining length (1 to 4 bytes)."""
    out = bytearray()
    while True:
        byte, size = size % 128, size // 128
        out.append(byte | (0x80 if size else 0))
        if not size:
            return bytes(out)


def string(text: str) -> bytes:
    """A UTF-8 string with its two-byte length."""
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str, user: str, password: str, keepalive: int = 60) -> bytes:
    """CONNECT: protocol level 4 (3.1.1), clean session, username and password."""
    body = string("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", keepalive)
    body += string(client_id) + string(user) + string(password)
    return b"\x10" + remaining_length(len(body)) + body


def subscribe_packet(topic_filter: str) -> bytes:
    """SUBSCRIBE (packet id 1) to one filter at QoS 0: the broker's fastest delivery."""
    body = struct.pack("!H", 1) + string(topic_filter) + b"\x00"
    return b"\x82" + remaining_length(len(body)) + body


def publish_packet(
    topic: bytes, payload: bytes, qos: int = 0, packet_id: int = 0, *, retain: bool = False, dup: bool = False
) -> bytes:
    """PUBLISH; the packet id is written only for QoS 1 and 2."""
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", packet_id) if qos else b"") + payload
    header = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    return bytes([header]) + remaining_length(len(body)) + body


def split_packets(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Take every complete packet off the front of ``buffer``: ``[(first byte, body), ...]``."""
    packets: list[tuple[int, bytes]] = []
    while len(buffer) >= 2:
        length, multiplier, offset = 0, 1, 1
        while True:
            if offset >= len(buffer):
                return packets
            byte = buffer[offset]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            offset += 1
            if not byte & 0x80:
                break
        if len(buffer) < offset + length:
            return packets
        packets.append((buffer[0], bytes(buffer[offset : offset + length])))
        del buffer[: offset + length]
    return packets


def publish_payload(first: int, body: bytes) -> bytes:
    """The payload of a PUBLISH body."""
    topic_length = struct.unpack_from("!H", body)[0]
    start = 2 + topic_length + (2 if first & 0x06 else 0)
    return body[start:]
