"""A minimal MQTT 3.1.1 publisher for the benchmarks.

paho-mqtt spends tens of microseconds of Python per message (more at QoS 1, more again over
WebSocket), so at thousands of messages per second it, not the lab, would set a benchmark's
figures. This publisher writes pre-encoded packets (wire.mqtt).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid

from wire.mqtt import connect_packet, publish_packet


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
            return publish_packet(topic, payload)
        self._packet_id = self._packet_id % 65535 + 1
        return publish_packet(topic, payload, 1, self._packet_id)

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
