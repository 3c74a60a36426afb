"""A lean Socket.IO client for the lab portal: what a live viewer needs, at little CPU per message.

A general client (``socketio.AsyncClient``) costs a few hundred microseconds of Python per message;
a load generator holding hundreds of viewers on the machine it measures would then compete with
the portal for the CPU and inflate the very latency it reports. This one speaks just enough of
Engine.IO 4 and Socket.IO 5 over a WebSocket (aiohttp's, whose framing is in C):

* open: the server's ``0{...}`` handshake; then ``40<auth JSON>`` to join the default namespace,
  answered by ``40{...}`` (accepted) or ``44{...}`` (refused);
* events: ``42["name", data]``, handed to a callback as ``(name, data)``;
* keepalive: the server's ping ``2`` is answered with ``3``;
* close: ``41`` or ``1`` from the server, or the socket closing.

No polling transport, no binary attachments, no acknowledgements: the portal sends none of these
to a viewer.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import aiohttp

from stress.errors import StressError

#: Called for each event with its name and its data (``None`` when the event carries none).
EventHandler = Callable[[str, Any], None]


class ViewerError(StressError):
    """The portal refused the viewer, or spoke something this client does not understand."""


def socketio_url(portal_url: str) -> str:
    """The WebSocket URL of the portal's Socket.IO endpoint, from its ``http(s)://`` address."""
    base = portal_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    else:
        raise ViewerError(f"portal URL must start with http:// or https://, got {portal_url!r}")
    return f"{base}/socket.io/?EIO=4&transport=websocket"


class Viewer:
    """One Socket.IO connection to the portal, driven by :meth:`connect` then :meth:`listen`.

    Args:
        portal_url: ``http://host:port`` of the portal.
        on_event: called (in the event loop) for every event received, before and after connect.
        headers: sent with the WebSocket handshake (a ``Cookie`` with the portal session).
        auth: the Socket.IO auth payload (``{"token": ...}``, ``{"scopes": [...]}``).
    """

    def __init__(
        self,
        portal_url: str,
        on_event: EventHandler,
        *,
        headers: dict[str, str] | None = None,
        auth: dict[str, Any] | None = None,
    ) -> None:
        self.url = socketio_url(portal_url)
        self._on_event = on_event
        self._headers = headers or {}
        self._auth = auth
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.closed_by_server = False

    async def connect(self, session: aiohttp.ClientSession, timeout: float = 30.0) -> None:
        """Open the WebSocket and join the default namespace.

        Raises:
            ViewerError: the portal refused the connection (the reason it gave), or the handshake
                was not Socket.IO.
            aiohttp.ClientError, TimeoutError: the portal could not be reached in time.
        """
        self._ws = await session.ws_connect(
            self.url,
            headers=self._headers,
            timeout=aiohttp.ClientWSTimeout(ws_receive=timeout, ws_close=5.0),
            autoping=True,
            max_msg_size=0,
        )
        opening = await self._ws.receive(timeout=timeout)
        if opening.type != aiohttp.WSMsgType.TEXT or not str(opening.data).startswith("0"):
            raise ViewerError(f"not a Socket.IO server at {self.url} (first frame {opening.data!r:.60})")
        await self._ws.send_str("40" + (json.dumps(self._auth) if self._auth is not None else ""))
        while True:
            message = await self._ws.receive(timeout=timeout)
            if message.type != aiohttp.WSMsgType.TEXT:
                raise ViewerError("the portal closed the connection before accepting it")
            text: str = message.data
            if text.startswith("40"):
                return
            if text.startswith("44"):
                raise ViewerError(f"the portal refused the connection: {_refusal(text[2:])}")
            await self._frame(text)

    async def listen(self) -> None:
        """Handle frames until the connection closes (by the server, or by :meth:`close`)."""
        ws = self._ws
        if ws is None:
            raise ViewerError("listen() before connect()")
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            if not await self._frame(message.data):
                self.closed_by_server = True
                break

    async def close(self) -> None:
        """Leave the namespace and close the WebSocket (harmless when already closed)."""
        ws = self._ws
        if ws is not None and not ws.closed:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                await ws.send_str("41")
            await ws.close()

    async def _frame(self, text: str) -> bool:
        """Handle one Engine.IO frame; False when the server ends the session."""
        if text.startswith("42"):
            body = json.loads(text[2:])
            if isinstance(body, list) and body and isinstance(body[0], str):
                self._on_event(body[0], body[1] if len(body) > 1 else None)
            return True
        if text == "2" and self._ws is not None:
            await self._ws.send_str("3")
            return True
        return not (text.startswith("41") or text == "1")


def _refusal(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body or "no reason given"
    message = data.get("message") if isinstance(data, dict) else None
    if isinstance(message, str):
        return message
    return body or "no reason given"
