"""How gunicorn serves the portal: gevent greenlets, and its own error answers in JSON.

``./lab`` and the container run::

    gunicorn --worker-class web.server.Worker --workers 1 --worker-connections 5000 \\
        --limit-request-line 8190 ... 'web:create_app()'

(8190, gunicorn's largest, is :data:`web.api.params.MAX_REQUEST_LINE`.)

gunicorn answers some requests before the application sees them: a request line or headers over
its limits (414, 431), a malformed request (400). By default it writes those as HTML pages; this
worker writes them as the API's JSON errors, ``{"error": "<one line>"}``, so that every error a
client of the API can get has one shape (and the OpenAPI document describes them all).
"""

from __future__ import annotations

import json
import socket

from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker


def write_json_error(sock: socket.socket, status: int, reason: str, message: str) -> None:
    """Answer a request gunicorn refused with ``{"error": ...}`` and close the connection."""
    detail = f"{reason}: {message}" if message else reason
    body = json.dumps({"error": detail[:300]}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1")
    util.write_nonblock(sock, head + body)


class Worker(GeventWorker):  # type: ignore[misc]  # gunicorn ships no type hints
    """gunicorn's gevent worker, writing the errors it answers by itself as JSON."""

    def init_process(self) -> None:
        """Swap in the JSON error writer (this process only), then run as usual."""
        util.write_error = write_json_error
        super().init_process()
