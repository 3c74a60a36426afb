"""A minimal MQTT 3.1.1 codec and publisher for the benchmarks.

paho-mqtt spends tens of microseconds of Python per message (more at QoS 1, more again over
WebSocket), so at thousands of messages per second it, not the lab, would set a benchmark's
figures. These helpers write pre-encoded packets and parse PUBLISH packets with a few slices.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
import uuid


def _varint(length: int) -> bytes:
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str, user: str, password: str) -> bytes:
    """CONNECT: protocol level 4 (3.1.1), clean session, username and password."""
    body = _string("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 60)
    body += _string(client_id) + _string(user) + _string(password)
    return b"\x10" + _varint(len(body)) + body


def subscribe_packet(topic_filter: str) -> bytes:
    """SUBSCRIBE (packet id 1) to one filter at QoS 0: the broker's fastest delivery."""
    body = struct.pack("!H", 1) + _string(topic_filter) + b"\x00"
    return b"\x82" + _varint(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, packet_id: int | None) -> bytes:
    """PUBLISH at QoS 0 (no packet id) or QoS 1."""
    if packet_id is None:
        body = struct.pack("!H", len(topic)) + topic + payload
        return b"\x30" + _varint(len(body)) + body
    body = struct.pack("!H", len(topic)) + topic + struct.pack("!H", packet_id) + payload
    return b"\x32" + _varint(len(body)) + body


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


class RawPublisher:
    """Publishes pre-encoded packets on a plain socket; a thread counts the PUBACKs."""

    def __init__(self, port: int, user: str, password: str, qos: int) -> None:
        self.qos = qos
        self.acked = 0
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(connect_packet(f"bench-pub-{uuid.uuid4().hex[:8]}", user, password))
        connack = self.sock.recv(4)
        if len(connack) < 4 or connack[3] != 0:
            raise SystemExit(f"the broker refused the publisher: CONNACK {connack!r}")
        self._packet_id = 0
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def packet(self, topic: bytes, payload: bytes) -> bytes:
        """One encoded PUBLISH."""
        if self.qos == 0:
            return publish_packet(topic, payload, None)
        self._packet_id = self._packet_id % 65535 + 1
        return publish_packet(topic, payload, self._packet_id)

    def send(self, packets: list[bytes]) -> None:
        self.sock.sendall(b"".join(packets))

    def _drain(self) -> None:
        pending = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            pending += chunk
            whole = len(pending) - len(pending) % 4  # PUBACK: 0x40 0x02 id id
            self.acked += whole // 4
            pending = pending[whole:]

    def close(self, wait_s: float, expected: int) -> None:
        """Wait (briefly) for the acknowledgements, then disconnect."""
        deadline = time.monotonic() + wait_s
        while self.qos and self.acked < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            self.sock.sendall(b"\xe0\x00")
        finally:
            self.sock.close()
