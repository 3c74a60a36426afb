"""The running parts of one portal process, and the typed way to reach them from a request.

:func:`web.app.create_app` builds a :class:`Portal` and keeps it as ``app.extensions["portal"]``;
views and handlers ask :func:`current_portal` for it instead of reading that untyped mapping.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import cast

from flask import Flask, current_app
from flask_socketio import SocketIO
from sqlalchemy import Engine

from web.alarms import Alarms
from web.buffer import ReadingBuffer
from web.cache import LatestCache
from web.fanout import Fanout
from web.ingest import Ingest
from web.live import Live
from web.metrics import Metrics
from web.removal import Removal
from web.retention import Retention
from web.sessions import SessionKeeper
from web.settings import Settings
from web.status import StatusWatch
from web.storage import Store
from web.takeover import StandIns
from web.writer import BatchWriter

log = logging.getLogger(__name__)

#: The key of the portal in ``app.extensions``.
EXTENSION = "portal"
#: How long a second caller of :meth:`Portal.stop` waits for the first one to finish.
STOP_WAIT_S = 10.0


@dataclass
class Portal:
    """The running parts of one portal process, reachable as ``app.extensions["portal"]``."""

    settings: Settings
    engine: Engine
    store: Store
    buffer: ReadingBuffer
    cache: LatestCache
    ingest: Ingest
    writer: BatchWriter
    socketio: SocketIO
    live: Live
    metrics: Metrics
    removal: Removal
    status: StatusWatch
    retention: Retention
    #: Units of measure by attribute name (web/units.json), under what devices send.
    units: dict[str, str]
    alarms: Alarms | None = None
    keeper: SessionKeeper | None = None
    #: Shares live values with the other replicas (replicas only).
    fanout: Fanout | None = None
    #: Stands in for a member of the share group that died (replicas only).
    takeover: StandIns | None = None
    _stopping: bool = field(default=False, init=False)
    _stop_lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _stopped: threading.Event = field(default_factory=threading.Event, init=False)

    def start(self) -> None:
        """Start the writer's threads, the live flusher, the session keeper, then the MQTT client."""
        self.writer.start()
        self.live.start()
        if self.fanout is not None:
            self.fanout.start()
        self.status.start()
        self.retention.start()
        if self.keeper is not None:
            self.keeper.start()
        self.ingest.start()
        if self.takeover is not None:
            self.takeover.start()

    def stop(self) -> None:
        """Stop taking messages, store what is queued (briefly), close live clients and the pool.

        Safe to call more than once and from any thread: a second caller waits for the first to
        finish (the interpreter must not exit while a stop started by SIGTERM is still flushing).
        """
        with self._stop_lock:
            first, self._stopping = not self._stopping, True
        if not first:
            self._stopped.wait(STOP_WAIT_S)
            return
        try:
            log.info("portal stopping")
            # Keep the broker connection while the writer flushes, so what it commits is acked.
            self.ingest.pause()
            if self.takeover is not None:
                self.takeover.stop()
            self.writer.stop()
            self.ingest.stop()
            self.status.stop()
            self.retention.stop()
            if self.keeper is not None:
                self.keeper.stop()
            if self.fanout is not None:
                self.fanout.stop()
            self.live.close_all()
            self.engine.dispose()
            log.info("portal stopped stored=%s dropped=%s", self.writer.stored, self.writer.dropped)
        finally:
            self._stopped.set()


def current_portal() -> Portal:
    """The portal of the app handling the current request (or in the current app context)."""
    return portal_of(current_app)


def portal_of(app: Flask) -> Portal:
    """The portal ``app`` was built with."""
    return cast(Portal, app.extensions[EXTENSION])
