"""MQTT over WebSocket (RFC 6455), the client side: an adapter between the socket and a session.

:class:`WebSocketClient` is the asyncio protocol of the socket (TCP, or TLS for ``wss``). It
sends the HTTP/1.1 upgrade asking for the ``mqtt`` subprotocol and checks the answer (101
Switching Protocols, the accept key made from its own key, ``mqtt`` agreed). Only then does the
:class:`~stress.mqtt.session.Session` get a transport, a :class:`FramedTransport`: each write is
one binary frame, masked as a client's must be. What the server sends is unframed and fed to the
session as one byte stream (an MQTT packet may span frames, a frame may hold several), so
fragmented messages need nothing more; pings are answered, a Close is answered and ends the
connection. The socket's pause and resume of writing reach the session unchanged, so
back-pressure works as over TCP.

What can go wrong is a connect error with one of three reasons (``on_lost`` after the CONNACK):

* ``websocket-refused``: the server answered the upgrade with another status than 101, or did not
  agree to the ``mqtt`` subprotocol (the detail quotes its status line);
* ``websocket-handshake``: its answer is no WebSocket handshake (a wrong accept key, not HTTP,
  too long), or it closed the connection before answering;
* ``websocket-protocol``: a frame that breaks RFC 6455 or MQTT's use of it (masked, reserved
  bits set, a text frame, a continuation out of place, a control frame too long).

A Close from the server ends the connection as the broker closing it would (``connection-lost``,
the close code in the detail).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Protocol, cast

from stress.errors import StressError
from stress.mqtt.reasons import classify_exception


class Framed(Protocol):
    """What the adapter drives above it (a :class:`stress.mqtt.session.Session`): a stream protocol
    that can also be told why its connection is ending."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...

    def data_received(self, data: bytes) -> None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...

    def explain(self, reason: str, detail: str) -> None:
        """The reason name and the detail of what ends the connection."""


REFUSED = "websocket-refused"
HANDSHAKE = "websocket-handshake"
PROTOCOL = "websocket-protocol"

#: Appended to the client's key before hashing it into the server's accept key (RFC 6455 1.3).
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Most bytes of an answer to the upgrade (its status line and headers).
MAX_HANDSHAKE = 16 * 1024
#: Largest frame taken from the server: an MQTT packet of the largest size, and its header.
MAX_FRAME = 268_435_455 + 5
#: Seconds a connection whose Close was answered is left to the server to close.
CLOSE_WAIT_S = 1.0

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class WebSocketError(StressError):
    """The server broke RFC 6455 (or MQTT's use of it); the session ends with ``websocket-protocol``."""


@dataclass(frozen=True)
class Upgrade:
    """Where the upgrade asks to go: the ``Host`` header (``host:port``) and the path."""

    host: str
    path: str = "/mqtt"


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``key``."""
    digest = hashlib.sha1(key.encode() + _GUID).digest()  # noqa: S324 - RFC 6455 fixes SHA-1 here
    return base64.b64encode(digest).decode()


def upgrade_request(upgrade: Upgrade, key: str) -> bytes:
    """The HTTP/1.1 request that asks for a WebSocket speaking MQTT."""
    return (
        f"GET {upgrade.path} HTTP/1.1\r\n"
        f"Host: {upgrade.host}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: mqtt\r\n"
        "\r\n"
    ).encode()


def answer_problem(head: bytes, key: str) -> tuple[str, str] | None:
    """What is wrong with the answer ``head`` (status line and headers) to an upgrade sent with
    ``key``, as ``(reason, detail)``; None when it opens a WebSocket speaking MQTT."""
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].strip()
    shown = repr(status[:120])
    version, _, rest = status.partition(" ")
    code = rest.partition(" ")[0]
    if not version.startswith("HTTP/") or not code.isdigit():
        return HANDSHAKE, f"the answer to the WebSocket upgrade is not HTTP: {shown}"
    if code != "101":
        return REFUSED, f"the server answered the WebSocket upgrade with {shown}, not 101 Switching Protocols"
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            return HANDSHAKE, f"a malformed header line in the answer to the WebSocket upgrade: {line[:80]!r}"
        name = name.strip().lower()
        headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
    return _headers_problem(headers, key, shown)


def _headers_problem(headers: dict[str, str], key: str, shown: str) -> tuple[str, str] | None:
    """What is wrong with the headers of a 101 answer (``shown``: its status line, quoted)."""
    connection = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    protocol = headers.get("sec-websocket-protocol", "")
    agreed = f"Sec-WebSocket-Protocol: {protocol[:40]}" if protocol else "no Sec-WebSocket-Protocol"
    checks = (
        (headers.get("upgrade", "").lower() == "websocket", HANDSHAKE, "without Upgrade: websocket"),
        ("upgrade" in connection, HANDSHAKE, "without Connection: Upgrade"),
        (
            headers.get("sec-websocket-accept") == accept_key(key),
            HANDSHAKE,
            "with a Sec-WebSocket-Accept that is not made from this client's key (a proxy in the way?)",
        ),
        (protocol == "mqtt", REFUSED, f"but did not agree to the mqtt subprotocol ({agreed})"),
        (
            not headers.get("sec-websocket-extensions"),
            HANDSHAKE,
            "with an extension this client did not ask for",
        ),
    )
    for ok, reason, what in checks:
        if not ok:
            return reason, f"the server answered {shown} {what}"
    return None


def mask(data: bytes, key: bytes) -> bytes:
    """``data`` XORed with the four bytes of ``key`` repeated (a client's frames are masked)."""
    size = len(data)
    repeated = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(size, "little")


def client_frame(opcode: int, payload: bytes, key: bytes) -> bytes:
    """One whole frame (FIN set) of ``payload``, masked with ``key``."""
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65_536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    return head + key + mask(payload, key)


class FrameReader:
    """Frames from the server: the bytes of its data frames as one stream, and its control frames.

    A data frame's payload is handed on as it arrives (a large frame is never held whole).
    """

    __slots__ = ("_buffer", "_fragmented", "_left")

    def __init__(self) -> None:
        self._buffer = bytearray()
        #: Bytes of the current data frame's payload still to come.
        self._left = 0
        #: Whether a data message has begun and its final frame not yet come.
        self._fragmented = False

    def feed(self, data: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
        """Add ``data``: the data bytes now complete, and the control frames ``(opcode, payload)``.

        Raises:
            WebSocketError: a frame breaks RFC 6455 or MQTT's use of it.
        """
        buffer = self._buffer
        buffer += data
        end = len(buffer)
        position = 0
        stream: list[bytes] = []
        controls: list[tuple[int, bytes]] = []
        while position < end:
            if self._left:
                take = min(self._left, end - position)
                stream.append(bytes(buffer[position : position + take]))
                position += take
                self._left -= take
                continue
            header = self._header(buffer, position, end)
            if header is None:
                break
            opcode, final, size, length = header
            if opcode >= CLOSE:
                if end - position < length + size:
                    break
                controls.append((opcode, bytes(buffer[position + length : position + length + size])))
                position += length + size
                continue
            self._fragmented = not final
            position += length
            self._left = size
        del buffer[:position]
        return b"".join(stream), controls

    def _header(self, buffer: bytearray, position: int, end: int) -> tuple[int, bool, int, int] | None:
        """The frame header at ``position``: ``(opcode, final, payload size, header length)``, or
        None while incomplete."""
        if end - position < 2:
            return None
        first, second = buffer[position], buffer[position + 1]
        if second & 0x80:
            raise WebSocketError("a masked frame from the server (only a client masks its frames)")
        if first & 0x70:
            raise WebSocketError("a frame with reserved bits set (no extension was agreed)")
        opcode, final, size, length = first & 0x0F, bool(first & 0x80), second & 0x7F, 2
        if size == 126:
            if end - position < 4:
                return None
            size, length = int.from_bytes(buffer[position + 2 : position + 4], "big"), 4
        elif size == 127:
            if end - position < 10:
                return None
            size, length = int.from_bytes(buffer[position + 2 : position + 10], "big"), 10
        self._check(opcode, final, size)
        if size > MAX_FRAME:
            raise WebSocketError(f"a frame of {size:,} bytes, larger than any MQTT packet")
        return opcode, final, size, length

    def _check(self, opcode: int, final: bool, size: int) -> None:
        """Raise :class:`WebSocketError` for a frame MQTT over WebSocket never has here."""
        if opcode >= CLOSE:
            if opcode not in (CLOSE, PING, PONG):
                raise WebSocketError(f"a frame with the unknown control opcode {opcode:#x}")
            if not final or size > 125:
                raise WebSocketError("a control frame that is fragmented or longer than 125 bytes")
        elif opcode == CONTINUATION:
            if not self._fragmented:
                raise WebSocketError("a continuation frame with no fragmented message to continue")
        elif opcode == BINARY:
            if self._fragmented:
                raise WebSocketError("a new data frame before the end of a fragmented message")
        elif opcode == TEXT:
            raise WebSocketError("a text frame (MQTT travels in binary frames only)")
        else:
            raise WebSocketError(f"a frame with the unknown data opcode {opcode:#x}")


class WebSocketClient(asyncio.Protocol):
    """The protocol of the socket: the upgrade, then frames to and from ``session``."""

    def __init__(self, session: Framed, upgrade: Upgrade) -> None:
        self.session = session
        self.upgrade = upgrade
        self.transport: asyncio.Transport | None = None
        self.key = base64.b64encode(os.urandom(16)).decode()
        #: Whether the upgrade was accepted (from then on, frames).
        self.open = False
        self._answer = bytearray()
        self._reader = FrameReader()
        self._close_sent = False
        self._close_received = False

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Ask for the upgrade."""
        self.transport = cast(asyncio.Transport, transport)  # a stream transport (uvloop's is not a subclass)
        self.transport.write(upgrade_request(self.upgrade, self.key))

    def data_received(self, data: bytes) -> None:
        """The answer to the upgrade, then frames."""
        if self.open:
            self._frames(data)
            return
        socket = self.transport
        if socket is None:
            return
        self._answer += data
        end = self._answer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._answer) > MAX_HANDSHAKE:
                too_long = f"the answer to the WebSocket upgrade is longer than {MAX_HANDSHAKE:,} bytes"
                self.fail(HANDSHAKE, too_long)
            return
        problem = answer_problem(bytes(self._answer[:end]), self.key)
        if problem is not None:
            self.fail(*problem)
            return
        rest = bytes(self._answer[end + 4 :])
        self._answer = bytearray()
        self.open = True
        self.session.connection_made(FramedTransport(self, socket))
        if rest:
            self._frames(rest)

    def connection_lost(self, exc: Exception | None) -> None:
        """Tell the session (which tells its owner, or its opener before the CONNACK)."""
        if not self.open and (
            exc is None or classify_exception(exc) in ("connection-reset", "connection-lost")
        ):
            how = "reset" if exc is not None else "closed"
            self.session.explain(
                HANDSHAKE,
                f"the server {how} the connection before answering the WebSocket upgrade "
                "(is it a WebSocket listener, and TLS as --tls says?)",
            )
        self.transport = None
        self.session.connection_lost(exc)

    def pause_writing(self) -> None:
        """The kernel stopped taking bytes: the session holds back, as over TCP."""
        self.session.pause_writing()

    def resume_writing(self) -> None:
        """The kernel takes bytes again."""
        self.session.resume_writing()

    # ------------------------------------------------------------------ frames

    def send(self, opcode: int, payload: bytes) -> None:
        """One frame to the server (nothing once a Close went)."""
        if self.transport is not None and not self._close_sent:
            self.transport.write(client_frame(opcode, payload, os.urandom(4)))
            if opcode == CLOSE:
                self._close_sent = True

    def fail(self, reason: str, detail: str) -> None:
        """Drop the connection at once for ``reason`` (what the session's owner or opener is told)."""
        self.session.explain(reason, detail)
        if self.transport is not None:
            self.transport.abort()

    def abort(self) -> None:
        """Drop the connection at once (a handshake that took too long)."""
        if self.transport is not None:
            self.transport.abort()

    def _frames(self, data: bytes) -> None:
        if self._close_received:
            return  # nothing counts after the server's Close
        try:
            stream, controls = self._reader.feed(data)
        except WebSocketError as exc:
            self.fail(PROTOCOL, str(exc))
            return
        if stream:
            self.session.data_received(stream)
        for opcode, payload in controls:
            if opcode == PING:
                self.send(PONG, payload)
            elif opcode == CLOSE:
                self._on_close(payload)
                return
            # PONG: this client sends no pings (MQTT's keep-alive does), so there is nothing to match

    def _on_close(self, payload: bytes) -> None:
        """The server ends the WebSocket: answer, and leave it to close the connection."""
        self._close_received = True
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
        text = payload[2:].decode("utf-8", "replace")
        said = f"close code {code}" if code is not None else "no close code"
        said += f": {text}" if text else ""
        self.session.explain("connection-lost", f"the server closed the WebSocket ({said})")
        self.send(CLOSE, payload[:2])
        if self.transport is not None:
            asyncio.get_running_loop().call_later(CLOSE_WAIT_S, self.transport.close)


class FramedTransport(asyncio.Transport):
    """The transport a session writes to over WebSocket: each write one binary frame."""

    def __init__(self, client: WebSocketClient, socket: asyncio.Transport) -> None:
        super().__init__()
        self._client = client
        self._socket = socket

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """One binary frame of ``data``."""
        self._client.send(BINARY, bytes(data))

    def close(self) -> None:
        """A Close frame (normal closure), then the connection closed once written."""
        if not self._socket.is_closing():
            self._client.send(CLOSE, (1000).to_bytes(2, "big"))
            self._socket.close()

    def abort(self) -> None:
        """Drop the connection at once."""
        self._socket.abort()

    def is_closing(self) -> bool:
        return self._socket.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._socket.get_extra_info(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._socket.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._socket.get_write_buffer_size()

    def pause_reading(self) -> None:
        self._socket.pause_reading()

    def resume_reading(self) -> None:
        self._socket.resume_reading()

    def is_reading(self) -> bool:
        return self._socket.is_reading()
