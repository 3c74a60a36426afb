"""WebSocket frames written whole under gunicorn's gevent worker.

Engine.IO serves WebSockets through simple-websocket, which writes each frame with a single
``socket.send()`` and ignores how much of it went out. A blocking socket writes everything, but
gevent's cooperative socket writes what fits in the kernel's buffer and returns the count: to a
client that reads slowly (a weak link, a laptop waking up, a big snapshot) the rest of the frame
is lost and the stream is garbage from then on. :class:`WholeWrites` hands simple-websocket a
socket whose ``send()`` is ``sendall()``: a frame is written whole or the writer waits (and a
client that keeps it waiting too long is dropped by :mod:`web.live`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

#: The WSGI application signature, loosely typed (environ, start_response) -> body.
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: Where gunicorn puts the client's socket in the WSGI environment (simple-websocket reads it).
SOCKET_KEY = "gunicorn.socket"


class SendAll:
    """A socket whose ``send()`` writes all of ``data`` before returning ``len(data)``."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def send(self, data: bytes, flags: int = 0) -> int:
        """Write every byte (waiting for room as needed, up to the socket's timeout)."""
        self._sock.sendall(data, flags)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class WholeWrites:
    """WSGI middleware: WebSocket upgrade requests get a :class:`SendAll` socket."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        sock = environ.get(SOCKET_KEY)
        if sock is not None and environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            environ[SOCKET_KEY] = SendAll(sock)
        return self.app(environ, start_response)
