"""What the portal itself knows of its health, pushed to the header of every page.

A browser's own connection tells only whether the browser reaches the portal. Behind the portal the
broker may be gone (no new values arrive), the database may refuse writes (values wait in memory and
are retried), or ingest may stall (values wait and none is stored). :class:`StatusWatch` looks once a
second and, when what it sees changes, sends the Socket.IO event ``status`` to every client::

    {"broker": "up" | "down", "database": "up" | "down", "ingest": "flowing" | "stalled",
     "live": "up" | "paused", "waiting": n, "problem": "<one line for the header, empty when all
     is well>", "replica": "<the replica's name, empty with one portal>"}

Each replica sends its own status to its own clients: ``live`` is ``paused`` while the Redis that
carries live values between replicas is out of reach (:mod:`web.fanout`).

A client gets the current status as soon as it connects, so a page opened during an outage says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from web.db_errors import first_line
from web.periodic import Periodic

if TYPE_CHECKING:
    from web.ingest import Ingest
    from web.storage import Store
    from web.writer import BatchWriter

log = logging.getLogger(__name__)

#: How often the watch looks.
EVERY_S = 1.0
#: Values waiting this long with none stored, the database answering, is a stalled ingest.
STALLED_AFTER_S = 3.0
#: With nothing to write, the database is asked ``SELECT 1`` this often.
PING_EVERY_S = 2.0


@dataclass(frozen=True)
class Status:
    """One look at the portal's health (see the module's docstring)."""

    broker: str
    database: str
    ingest: str
    waiting: int
    problem: str
    live: str = "up"
    replica: str = ""

    def as_json(self) -> dict[str, Any]:
        """The ``status`` event's payload."""
        return asdict(self)


UNKNOWN = Status("up", "up", "flowing", 0, "")


class StatusWatch:
    """Looks at ingest, the writer and the database once a second; tells clients of each change.

    Args:
        ingest: the broker side.
        writer: the database side (its last error, how much it stored and holds).
        store: asked ``SELECT 1`` while the writer has nothing to tell.
        waiting: how many values wait to be stored (the ingest buffer and the writer's hand-off).
        emit: sends a status to every client.
        live_problem: why live values are not shared between replicas (``None`` when they are).
        replica: this replica's name (empty with one portal).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        ingest: Ingest,
        writer: BatchWriter,
        store: Store,
        waiting: Callable[[], int],
        emit: Callable[[Status], None],
        *,
        live_problem: Callable[[], str | None] = lambda: None,
        replica: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ingest = ingest
        self._writer = writer
        self._store = store
        self._waiting = waiting
        self._emit = emit
        self._live_problem = live_problem
        self._replica = replica
        self._clock = clock
        self._looks = Periodic("portal-status", self.look, EVERY_S, stop_wait_s=5.0)
        self._stored = -1
        self._stored_since = clock()
        self._next_ping = 0.0
        self._database_error: str | None = None
        self.current = replace(UNKNOWN, replica=replica)

    def start(self) -> None:
        """Look once a second in a daemon thread until :meth:`stop`."""
        self._looks.start()

    def stop(self) -> None:
        """Stop looking."""
        self._looks.stop()

    def as_json(self) -> dict[str, Any]:
        """What was seen last, as the ``status`` event carries it."""
        return self.current.as_json()

    def look(self) -> Status:
        """Look now; tell the clients if anything changed. Returns what was seen."""
        now = self._clock()
        waiting = self._waiting()
        stored = self._writer.stored
        if stored != self._stored or waiting == 0:
            self._stored, self._stored_since = stored, now
        database_error = self._writer.last_error or self._ping(now, waiting)
        broker_up = self._ingest.ready
        stalled = database_error is None and waiting > 0 and now - self._stored_since >= STALLED_AFTER_S
        live_problem = self._live_problem()
        if not broker_up:
            problem = f"broker unreachable ({self._ingest.state}): no new values"
        elif database_error is not None:
            problem = f"database unreachable: {waiting:,} values kept, retrying"
        elif stalled:
            idle_s = now - self._stored_since
            problem = f"ingest stalled: {waiting:,} values waiting, none stored for {idle_s:.0f} s"
        elif live_problem is not None:
            problem = live_problem
        else:
            problem = ""
        seen = Status(
            broker="up" if broker_up else "down",
            database="down" if database_error is not None else "up",
            ingest="stalled" if stalled else "flowing",
            waiting=waiting,
            problem=problem,
            live="paused" if live_problem is not None else "up",
            replica=self._replica,
        )
        changed = (seen.broker, seen.database, seen.ingest, seen.live) != (
            self.current.broker,
            self.current.database,
            self.current.ingest,
            self.current.live,
        )
        self.current = seen
        if changed:
            log.info(
                "portal status broker=%s database=%s ingest=%s live=%s",
                seen.broker,
                seen.database,
                seen.ingest,
                seen.live,
            )
            self._emit(seen)
        return seen

    def _ping(self, now: float, waiting: int) -> str | None:
        """The database's error, asking it only while the writer has nothing to tell."""
        if waiting > 0 and self._database_error is None:
            return None  # the writer tells soon enough
        if now < self._next_ping:
            return self._database_error
        self._next_ping = now + PING_EVERY_S
        try:
            self._store.ping()
        except SQLAlchemyError as exc:
            self._database_error = first_line(exc)
        else:
            self._database_error = None
        return self._database_error
