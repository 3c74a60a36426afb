"""Socket.IO clients that misbehave, for tests of the portal's live path.

:class:`RawViewer` speaks Engine.IO/Socket.IO over a plain socket, frame by frame, so a test
decides exactly when (and whether) it reads: a client that stopped reading, one whose receive
buffer is tiny, one that reads late and checks every frame it finally gets. Run as a module it is
a well-behaved viewer in its own process (it reads and answers pings until killed), which a test
can freeze with SIGSTOP, as a laptop going to sleep freezes a browser::

    python tests/web/live_clients.py PORTAL_URL COOKIE '[{"scope": "site"}]'

It prints ``subscribed`` once the portal accepted it.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

#: WebSocket opcodes.
TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA
_KNOWN_OPCODES = {0x0, TEXT, 0x2, CLOSE, PING, PONG}


class FrameError(AssertionError):
    """The bytes from the portal are not a well-formed WebSocket stream of Engine.IO packets."""


@dataclass(frozen=True)
class Frame:
    """One WebSocket frame from the server."""

    opcode: int
    payload: bytes

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")


def client_frame(text: str, opcode: int = TEXT) -> bytes:
    """A masked frame from client to server."""
    data = text.encode()
    mask = os.urandom(4)
    size = len(data)
    if size < 126:
        head = bytes([0x80 | opcode, 0x80 | size])
    elif size < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + size.to_bytes(8, "big")
    return head + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(data))


class RawViewer:
    """A Socket.IO client on a plain socket that reads only when told to.

    Args:
        portal_url: ``http://host:port``.
        cookie: the ``Cookie`` header of a signed-in session.
        scopes: what to subscribe to at connect (``auth={"scopes": ...}``).
        token: a bearer token to sign in with (``auth={"token": ...}``) instead of the cookie.
        receive_buffer: SO_RCVBUF in bytes (small: the portal's writes back up sooner).
    """

    def __init__(
        self,
        portal_url: str,
        cookie: str,
        scopes: list[dict[str, str]],
        *,
        token: str | None = None,
        receive_buffer: int | None = None,
    ) -> None:
        address = urlsplit(portal_url)
        self.sock = socket.socket()
        if receive_buffer is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(10)
        self.sock.connect((address.hostname or "127.0.0.1", address.port or 80))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                f"Host: {address.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nCookie: {cookie}\r\n\r\n"
            ).encode()
        )
        self._buffer = b""
        while b"\r\n\r\n" not in self._buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise FrameError("the portal closed the connection during the WebSocket handshake")
            self._buffer += chunk
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise FrameError(f"no WebSocket upgrade: {head[:80]!r}")
        auth: dict[str, Any] = {"scopes": scopes}
        if token is not None:
            auth["token"] = token
        self.send(f"40{json.dumps(auth)}")
        self.closed = False

    def send(self, text: str) -> None:
        """Send one Engine.IO packet."""
        self.sock.sendall(client_frame(text))

    def read(self, seconds: float) -> list[Frame]:
        """Read for up to ``seconds`` (answering pings), checking every frame; stops at close.

        Raises:
            FrameError: a frame that is not well formed, or text that is not an Engine.IO packet.
        """
        frames: list[Frame] = []
        deadline = time.monotonic() + seconds
        while not self.closed and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                self.closed = True
                break
            if not chunk:
                self.closed = True
            self._buffer += chunk
            frames.extend(self._frames())
        return frames

    def events(self, frames: list[Frame]) -> list[tuple[str, Any]]:
        """The Socket.IO events among ``frames``, as ``(name, data)``."""
        found = []
        for frame in frames:
            if frame.opcode == TEXT and frame.text.startswith("42"):
                name, *data = json.loads(frame.text[2:])
                found.append((name, data[0] if data else None))
        return found

    def close(self) -> None:
        """Drop the connection."""
        self.closed = True
        self.sock.close()

    def _frames(self) -> list[Frame]:
        frames = []
        while len(self._buffer) >= 2:
            first, second = self._buffer[0], self._buffer[1]
            opcode, size, offset = first & 0x0F, second & 0x7F, 2
            if first & 0x70 or second & 0x80 or opcode not in _KNOWN_OPCODES:
                raise FrameError(f"malformed frame header {self._buffer[:2]!r}")
            if size == 126:
                if len(self._buffer) < 4:
                    break
                size, offset = int.from_bytes(self._buffer[2:4], "big"), 4
            elif size == 127:
                if len(self._buffer) < 10:
                    break
                size, offset = int.from_bytes(self._buffer[2:10], "big"), 10
            if len(self._buffer) < offset + size:
                break
            frame = Frame(opcode, self._buffer[offset : offset + size])
            self._buffer = self._buffer[offset + size :]
            self._check(frame)
            frames.append(frame)
            if opcode == TEXT and frame.payload == b"2":
                self.send("3")  # Engine.IO ping: answer, as a live client does
            elif opcode == CLOSE:
                self.closed = True
        return frames

    @staticmethod
    def _check(frame: Frame) -> None:
        if frame.opcode != TEXT:
            return
        try:
            text = frame.text
        except UnicodeDecodeError:
            raise FrameError(f"a text frame that is not UTF-8: {frame.payload[:60]!r}") from None
        if not text or text[0] not in "0123456":
            raise FrameError(f"not an Engine.IO packet: {text[:60]!r}")
        if text.startswith("42"):
            try:
                json.loads(text[2:])
            except ValueError:
                raise FrameError(f"an event that is not JSON ({len(text)} chars): {text[:60]!r}") from None


def main(argv: list[str]) -> int:
    """Connect, say ``subscribed``, then read and answer pings until killed."""
    portal_url, cookie, scopes = argv[0], argv[1], json.loads(argv[2])
    viewer = RawViewer(portal_url, cookie, scopes)
    while True:
        events = viewer.events(viewer.read(1.0))
        if any(name == "snapshot" for name, _data in events):
            sys.stdout.write("subscribed\n")
            sys.stdout.flush()
        if viewer.closed:
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
