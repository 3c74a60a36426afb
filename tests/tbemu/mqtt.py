"""The MQTT side of the ThingsBoard emulator: a small MQTT 3.1.1 and 5 server on asyncio.

It implements what ThingsBoard's MQTT transport does for devices: CONNECT with the access
token as user name (an unknown token is refused: CONNACK 5 "not authorized" in 3.1.1, reason
0x86 "bad user name or password" in 5), one session per token (a new connection with a token
already connected closes the older one; in MQTT 5 with DISCONNECT 0x8E "session taken over"),
PUBLISH at QoS 0 and 1, SUBSCRIBE, PINGREQ and DISCONNECT. Messages are handed to the emulator
(:meth:`Server.handle` callbacks), which decides what they mean.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from wire import mqtt as wire

MQTT5 = 5


def packet(kind: int, body: bytes, flags: int = 0) -> bytes:
    """A whole packet: fixed header and body."""
    return wire.packet((kind << 4) | flags, body)


def _skip_properties(data: bytes, offset: int) -> int:
    length, offset = wire.read_varint(data, offset)
    return offset + length


@dataclass
class Connection:
    """One client connection."""

    writer: asyncio.StreamWriter
    version: int = 4
    token: str = ""
    client_id: str = ""
    subscriptions: set[str] = field(default_factory=set)
    next_id: int = 0
    closed: bool = False

    def send(self, data: bytes) -> None:
        if not self.closed and not self.writer.is_closing():
            self.writer.write(data)

    def publish(self, topic: str, payload: bytes) -> None:
        """PUBLISH at QoS 0 (how ThingsBoard sends RPC requests by default)."""
        body = wire.utf8(topic) + (b"\x00" if self.version == MQTT5 else b"") + payload
        self.send(packet(3, body))

    def puback(self, packet_id: int, reason: int = 0) -> None:
        body = struct.pack("!H", packet_id)
        if self.version == MQTT5 and reason:
            body += bytes([reason, 0])
        self.send(packet(4, body))

    def disconnect(self, reason: int) -> None:
        if self.version == MQTT5:
            self.send(packet(14, bytes([reason, 0])))
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()


class Server:
    """The MQTT listener; ``authenticate(token) -> bool`` and ``on_publish(conn, topic, payload,
    qos, packet_id)`` come from the emulator, which also learns of sessions opening and closing."""

    def __init__(
        self,
        authenticate: Callable[[str], bool],
        on_publish: Callable[[Connection, str, bytes, int, int], None],
        on_session: Callable[[Connection, bool], None],
        on_refused: Callable[[], None],
    ) -> None:
        self.authenticate = authenticate
        self.on_publish = on_publish
        self.on_session = on_session
        self.on_refused = on_refused
        self.sessions: dict[str, Connection] = {}
        self.taken_over = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for conn in list(self.sessions.values()):
            conn.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _read_packet(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        head = await reader.readexactly(2)
        while head[-1] & 0x80 and len(head) < 5:
            head += await reader.readexactly(1)
        length, _ = wire.read_varint(head, 1)
        return head[0], await reader.readexactly(length)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(writer)
        try:
            first, body = await asyncio.wait_for(self._read_packet(reader), 10)
            if first >> 4 != 1 or not self._connect(conn, body):
                return
            keepalive = struct.unpack("!H", body[8:10])[0]
            timeout = keepalive * 1.5 if keepalive else None
            while not conn.closed:
                first, body = await asyncio.wait_for(self._read_packet(reader), timeout)
                if not self._packet(conn, first, body):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, IndexError, struct.error):
            pass
        finally:
            if self.sessions.get(conn.token) is conn:
                del self.sessions[conn.token]
                self.on_session(conn, False)
            conn.close()

    def _connect(self, conn: Connection, body: bytes) -> bool:
        offset = 2 + struct.unpack("!H", body[:2])[0]
        conn.version = body[offset]
        flags = body[offset + 1]
        offset += 4
        if conn.version == MQTT5:
            offset = _skip_properties(body, offset)
        fields: list[str] = []
        size = struct.unpack("!H", body[offset : offset + 2])[0]
        conn.client_id = body[offset + 2 : offset + 2 + size].decode()
        offset += 2 + size
        if flags & 0x04:  # a will: properties (MQTT 5), topic and message
            if conn.version == MQTT5:
                offset = _skip_properties(body, offset)
            for _ in range(2):
                offset += 2 + struct.unpack("!H", body[offset : offset + 2])[0]
        if flags & 0x80:
            size = struct.unpack("!H", body[offset : offset + 2])[0]
            fields.append(body[offset + 2 : offset + 2 + size].decode())
        conn.token = fields[0] if fields else ""
        if not conn.token or not self.authenticate(conn.token):
            self.on_refused()
            code = 0x86 if conn.version == MQTT5 else 5
            conn.send(packet(2, bytes([0, code]) + (b"\x00" if conn.version == MQTT5 else b"")))
            conn.close()
            return False
        older = self.sessions.get(conn.token)
        if older is not None:  # one session per token: the older one goes
            self.taken_over += 1
            self.on_session(older, False)
            older.disconnect(0x8E)
        self.sessions[conn.token] = conn
        conn.send(packet(2, b"\x00\x00" + (b"\x00" if conn.version == MQTT5 else b"")))
        self.on_session(conn, True)
        return True

    def _packet(self, conn: Connection, first: int, body: bytes) -> bool:
        kind = first >> 4
        if kind == 3:  # PUBLISH
            qos = (first >> 1) & 3
            size = struct.unpack("!H", body[:2])[0]
            topic = body[2 : 2 + size].decode()
            offset = 2 + size
            packet_id = 0
            if qos:
                packet_id = struct.unpack("!H", body[offset : offset + 2])[0]
                offset += 2
            if conn.version == MQTT5:
                offset = _skip_properties(body, offset)
            self.on_publish(conn, topic, body[offset:], qos, packet_id)
        elif kind == 8:  # SUBSCRIBE
            packet_id = struct.unpack("!H", body[:2])[0]
            offset = 2
            if conn.version == MQTT5:
                offset = _skip_properties(body, offset)
            granted = bytearray()
            while offset < len(body):
                size = struct.unpack("!H", body[offset : offset + 2])[0]
                conn.subscriptions.add(body[offset + 2 : offset + 2 + size].decode())
                granted.append(min(body[offset + 2 + size] & 3, 1))
                offset += 3 + size
            props = b"\x00" if conn.version == MQTT5 else b""
            conn.send(packet(9, struct.pack("!H", packet_id) + props + bytes(granted)))
        elif kind == 10:  # UNSUBSCRIBE
            packet_id = struct.unpack("!H", body[:2])[0]
            conn.send(packet(11, struct.pack("!H", packet_id)))
        elif kind == 12:  # PINGREQ
            conn.send(packet(13, b""))
        elif kind == 4:  # PUBACK of what we sent at QoS 1
            pass
        elif kind == 14:  # DISCONNECT
            return False
        return True
