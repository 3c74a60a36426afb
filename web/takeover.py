"""A portal replica stands in for a member of its share group that died and did not come back.

Members of one MQTT shared subscription (``MQTT_SHARE_GROUP``) each keep a persistent session,
and the broker goes on handing a dead member its share of the messages, queued for a return that
may never come. So every member holds a PostgreSQL session advisory lock named after its client
id for as long as it lives (the database releases it when the process dies), and looks at the
locks of the others (``MQTT_SHARE_PEERS``) every :data:`CHECK_EVERY_S`. A lock found free at two
looks in a row is a dead member: this replica takes the lock (so no other survivor does the
same), connects as that member (a stand-in :class:`~web.ingest.Ingest`: the same storing and
acknowledging after commit, never a reconnect), receives what the broker kept, stores it, leaves
the group on that session (so the broker stops keeping a share for it) and lets the lock go.

A member that returns connects under its own client id, which ends any stand-in still on its
session (the broker allows one connection per client id), subscribes again and takes its share
back. Nothing is lost either way: a message is acknowledged only once it is committed, so what a
stand-in had not acknowledged is delivered again to whoever holds the session next.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from sqlalchemy import Connection, Engine, text

from web.ingest import Ingest
from web.messages import Reading

log = logging.getLogger(__name__)

#: Seconds between two looks at the other members' locks.
CHECK_EVERY_S = 5.0
#: Looks in a row that must find a member's lock free before its session is taken over.
FREE_LOOKS = 2
#: A stand-in is done once no message has come for this long (after leaving the group, again).
QUIET_S = 2.0
#: Longest a stand-in may take to connect and subscribe, and to drain a session.
SUBSCRIBE_TIMEOUT_S = 15.0
DRAIN_TIMEOUT_S = 300.0
_LOCK = "SELECT pg_try_advisory_lock(hashtextextended(:name, 0))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended(:name, 0))"


def lock_name(client_id: str) -> str:
    """The advisory lock a member holds while it lives."""
    return f"iot-lab portal member {client_id}"


class Acknowledgements:
    """The writer's acknowledgement callback over the portal's own client and its stand-ins: each
    sends the PUBACKs of the readings that came over its own connection."""

    def __init__(self, ingest: Ingest) -> None:
        self._clients = [ingest]
        self._lock = threading.Lock()

    def add(self, ingest: Ingest) -> None:
        with self._lock:
            self._clients = [*self._clients, ingest]

    def remove(self, ingest: Ingest) -> None:
        with self._lock:
            self._clients = [client for client in self._clients if client is not ingest]

    def __call__(self, readings: Sequence[Reading]) -> None:
        for client in self._clients:  # (a copy: add and remove replace the list)
            client.acknowledge(readings)


class StandIns:
    """Watches the other members of the share group and takes over the session of one that died.

    Args:
        engine: the portal's database (one connection of it is held while this runs).
        me: this replica's client id.
        peers: the other members' client ids.
        stand_in: builds a stand-in ingest client for a member's client id.
        acknowledgements: where a stand-in's PUBACKs are routed while it runs.
        idle: True when every reading taken so far is committed (the buffer and the writer are empty).
    """

    def __init__(
        self,
        engine: Engine,
        me: str,
        peers: Sequence[str],
        *,
        stand_in: Callable[[str], Ingest],
        acknowledgements: Acknowledgements,
        idle: Callable[[], bool],
    ) -> None:
        self.engine = engine
        self.me = me
        self.peers = tuple(peers)
        self._stand_in = stand_in
        self._acknowledgements = acknowledgements
        self._idle = idle
        self._free_looks: dict[str, int] = {}
        #: Members whose session was drained and who have not come back since.
        self.taken: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching (nothing to watch without peers)."""
        if self.peers and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="portal-takeover", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop watching; a stand-in at work is stopped too (the broker keeps what it left)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                    self._watch(connection)
            except Exception:  # the database went away: look again later, with a new connection
                log.exception("portal takeover: cannot watch the other members; trying again")
            self._stop.wait(CHECK_EVERY_S)

    def _watch(self, connection: Connection) -> None:
        holding = False
        while not self._stop.is_set():
            if not holding:  # (a stand-in may hold it while it drains our session after a restart)
                holding = _try_lock(connection, self.me)
            for peer in self.peers:
                self._look(connection, peer)
            self._stop.wait(CHECK_EVERY_S)

    def _look(self, connection: Connection, peer: str) -> None:
        if not _try_lock(connection, peer):  # alive (or another survivor is taking it over)
            self._free_looks.pop(peer, None)
            self.taken.discard(peer)
            return
        try:
            looks = self._free_looks[peer] = self._free_looks.get(peer, 0) + 1
            if peer not in self.taken and looks >= FREE_LOOKS:
                self.take_over(peer)
        finally:
            connection.execute(text(_UNLOCK), {"name": lock_name(peer)})

    def take_over(self, peer: str) -> int:
        """Drain ``peer``'s session: store what the broker kept for it, then leave the group on
        its session. Returns the messages taken."""
        ingest = self._stand_in(peer)
        self._acknowledgements.add(ingest)
        started = time.monotonic()
        log.warning("portal takeover: member %s is gone; taking over its broker session", peer)
        try:
            ingest.start()
            if not _wait(lambda: ingest.ready or ingest.stopped, SUBSCRIBE_TIMEOUT_S, self._stop):
                log.error("portal takeover: could not subscribe as %s; will try again", peer)
                return 0
            self._drain(ingest)
            if self._stop.is_set() or ingest.stopped:
                log.warning("portal takeover: stopped before %s's session was drained", peer)
                return ingest.taken
            ingest.leave_group()
            self._drain(ingest)  # what was on its way when it left
            self.taken.add(peer)
            log.warning(
                "portal takeover: drained the session of %s in %.1f s (%d messages)",
                peer,
                time.monotonic() - started,
                ingest.taken,
            )
            return ingest.taken
        finally:
            ingest.stop()
            self._acknowledgements.remove(ingest)

    def _drain(self, ingest: Ingest) -> None:
        """Until no message has come for :data:`QUIET_S` and all taken are committed and acknowledged."""

        def quiet() -> bool:
            return ingest.stopped or (time.monotonic() - ingest.last_message >= QUIET_S and self._idle())

        _wait(quiet, DRAIN_TIMEOUT_S, self._stop)


def _try_lock(connection: Connection, client_id: str) -> bool:
    return bool(connection.execute(text(_LOCK), {"name": lock_name(client_id)}).scalar())


def _wait(done: Callable[[], bool], timeout: float, stop: threading.Event) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline or stop.wait(0.1):
            return False
    return True
