"""Live push to browsers over Socket.IO.

Events, server to client (default namespace ``/``):

``snapshot``
    Sent once to a client right after it connects: a list of every attribute's latest value,
    ``[{"room": str, "device": str, "attr": str, "value": float | str, "ts": int}, ...]``,
    ``ts`` in milliseconds since 1970 (UTC). Empty if the database cannot be read.
``values``
    Broadcast after each committed batch: a list of the same objects, one per attribute whose
    latest value changed in that batch.

Only signed-in sessions may connect (the Flask session cookie travels with the handshake);
others are refused. Connected clients join the Socket.IO room ``site``; rooms per lab room or
device can later narrow what a client receives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask_socketio import SocketIO, emit, join_room
from sqlalchemy.exc import SQLAlchemyError

from web.auth import current_user
from web.storage import LatestValue

log = logging.getLogger(__name__)

SNAPSHOT_EVENT = "snapshot"
VALUES_EVENT = "values"
#: Socket.IO room every signed-in client joins.
SITE_ROOM = "site"


class Live:
    """Binds the connect handler to ``socketio`` and pushes stored values to clients.

    Args:
        socketio: the app's Socket.IO server.
        snapshot: returns the current latest values (from the database).
    """

    def __init__(self, socketio: SocketIO, snapshot: Callable[[], list[LatestValue]]) -> None:
        self.socketio = socketio
        self._snapshot = snapshot
        socketio.on_event("connect", self._on_connect)
        socketio.on_event("disconnect", self._on_disconnect)

    def publish(self, values: list[LatestValue]) -> None:
        """Send newly stored values to every connected client (any thread may call this)."""
        if values:
            self.socketio.emit(VALUES_EVENT, [value.as_event() for value in values], to=SITE_ROOM)

    def close_all(self) -> None:
        """Close every client's connection (on shutdown); browsers reconnect when the portal is back."""
        participants = list(self.socketio.server.manager.get_participants("/", SITE_ROOM))
        for _sid, eio_sid in participants:
            try:
                self.socketio.server.eio.disconnect(eio_sid)
            except Exception:  # a client that is already gone must not stop the others
                log.debug("closing live client %s failed", eio_sid, exc_info=True)
        if participants:
            log.info("closed %s live connections", len(participants))

    def _on_connect(self, _auth: Any = None) -> bool:
        user = current_user()
        if user is None:
            log.info("live connection refused: not signed in")
            return False
        join_room(SITE_ROOM)
        try:
            values = self._snapshot()
        except SQLAlchemyError as exc:
            log.error("live snapshot unavailable, sending an empty one: %s", str(exc).splitlines()[0])
            values = []
        emit(SNAPSHOT_EVENT, [value.as_event() for value in values])
        log.info("live client connected user=%s snapshot=%s", user, len(values))
        return True

    def _on_disconnect(self, _reason: Any = None) -> None:
        log.debug("live client disconnected")
