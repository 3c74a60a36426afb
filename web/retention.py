"""Retention: telemetry and its rollups in one partition per UTC day; days past the limit dropped whole.

Since migration 0008, ``telemetry`` (by ``ts``) and ``telemetry_1m`` (by ``bucket``) are partitioned
by range, each with a default partition ``<table>_default`` for the rows no day partition takes.
One round of :func:`maintain`, for each of the two tables:

1. drops the day partitions ``<table>_pYYYYMMDD`` that end before the cutoff (now minus
   ``RETENTION_DAYS``): a day of ten million rows goes in milliseconds, where ``DELETE`` takes
   minutes and leaves the table as large as before;
2. deletes the rows of the default partition older than the cutoff (values with odd timestamps);
3. creates the partitions of today and the next :data:`DAYS_AHEAD` days, and of every kept day whose
   rows wait in the default partition, moving them out first (PostgreSQL refuses to attach a day
   while the default partition holds rows of it).

So data is kept at least ``RETENTION_DAYS`` days and at most one day more. ``RETENTION_DAYS=0`` keeps
everything (partitions are still made). Rows of a day that has no partition yet (the portal was
stopped for days, a device's clock is off) are kept in the default partition meanwhile; nothing is
ever refused.

A round holds a session advisory lock, so of several portals on one database one does the work
and the others skip. Every step waits at most :data:`LOCK_TIMEOUT` for its locks: a round that cannot
get a table soon (a long query reading it) gives up that step, and the next round tries again, so
ingest never waits behind retention for long. Steps take the registry's lock before a partition's,
in the order the portal's writer does, so they do not deadlock with it.

:class:`Retention` runs a round when the portal starts and every :data:`INTERVAL_S` seconds.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from web.db_errors import first_line
from web.periodic import Periodic

log = logging.getLogger(__name__)

#: Days after today that always have their partition ready.
DAYS_AHEAD = 2
#: Seconds between two rounds.
INTERVAL_S = 3600.0
#: Seconds after the portal starts before its first round (the writer connects first).
FIRST_ROUND_AFTER_S = 2.0
#: Longest wait for a table's lock in one step.
LOCK_TIMEOUT = "2s"
#: Session advisory lock held by the portal doing a round ("lab-ret" in ASCII, distinct from migrations).
LOCK_ID = 0x6C61622D726574

_DAY_NAME = re.compile(r"_p(\d{8})$")


@dataclass(frozen=True)
class Partitioned:
    """A table partitioned by range of one time column, a partition per day.

    Statements name these tables and their partitions in SQL text (DDL takes no parameters): the
    names are the constants of :data:`TABLES` and dates, never anything a user sent.
    """

    name: str
    column: str

    @property
    def default(self) -> str:
        """The default partition's name."""
        return f"{self.name}_default"

    def partition(self, day: date) -> str:
        """The name of ``day``'s partition."""
        return f"{self.name}_p{day:%Y%m%d}"


#: The tables retention looks after, in the order it does.
TABLES = (Partitioned("telemetry", "ts"), Partitioned("telemetry_1m", "bucket"))


@dataclass
class Round:
    """What one round did."""

    dropped: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    #: Rows moved out of default partitions into their day's new partition.
    moved: int = 0
    #: Rows older than the cutoff deleted from default partitions.
    deleted: int = 0
    #: Steps given up (a lock not had in time, an error): the next round tries them again.
    skipped: list[str] = field(default_factory=list)


def start_of(day: date) -> datetime:
    """Midnight UTC at the start of ``day``."""
    return datetime.combine(day, time(), tzinfo=UTC)


def cutoff(now: datetime, days: int) -> datetime | None:
    """The oldest time kept with ``days`` of retention, or None when everything is kept."""
    return now - timedelta(days=days) if days > 0 else None


def maintain(engine: Engine, days: int, now: datetime | None = None) -> Round | None:
    """One round over :data:`TABLES`.

    Args:
        engine: the lab database.
        days: ``RETENTION_DAYS``; 0 keeps everything.
        now: the time to work from (the database's clock is not used).

    Returns:
        What was done, or None when another process holds the lock (it is doing the round).

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database could not be reached or read.
    """
    now = now or datetime.now(UTC)
    done = Round()
    with engine.connect() as connection:
        locked = connection.execute(text("SELECT pg_try_advisory_lock(:id)"), {"id": LOCK_ID}).scalar()
        connection.commit()
        if not locked:
            return None
        try:
            for table in TABLES:
                _maintain(connection, table, now, days, done)
        finally:
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": LOCK_ID})
            connection.commit()
    return done


def day_partitions(connection: Connection, table: Partitioned) -> dict[date, str]:
    """The day partitions ``table`` has, by day (partitions of other names are not the lab's)."""
    rows = connection.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:table AS regclass)"
        ),
        {"table": table.name},
    )
    days: dict[date, str] = {}
    for (name,) in rows:
        match = _DAY_NAME.search(name)
        if name.startswith(table.name + "_p") and match and len(name) == len(table.name) + 10:
            days[datetime.strptime(match.group(1), "%Y%m%d").date()] = name
    connection.commit()
    return days


def _maintain(connection: Connection, table: Partitioned, now: datetime, days: int, done: Round) -> None:
    existing = day_partitions(connection, table)
    oldest = cutoff(now, days)
    if oldest is not None:
        for day, name in sorted(existing.items()):
            if start_of(day + timedelta(days=1)) <= oldest:
                with _step(connection, done, f"drop {name}"):
                    connection.execute(text(f"DROP TABLE {name}"))
                    done.dropped.append(name)
        with _step(connection, done, f"delete old rows of {table.default}"):
            deleted = connection.execute(
                text(f"DELETE FROM {table.default} WHERE {table.column} < :oldest"),  # noqa: S608
                {"oldest": oldest},
            )
            done.deleted += deleted.rowcount
    today = now.astimezone(UTC).date()
    waiting = _days_waiting(connection, table, oldest, start_of(today + timedelta(days=DAYS_AHEAD + 1)))
    wanted = waiting | {today + timedelta(days=ahead) for ahead in range(DAYS_AHEAD + 1)}
    for day in sorted(wanted - existing.keys()):
        with _step(connection, done, f"create {table.partition(day)}"):
            done.moved += _create(connection, table, day, moving=day in waiting)
            done.created.append(table.partition(day))


def _days_waiting(
    connection: Connection, table: Partitioned, oldest: datetime | None, end: datetime
) -> set[date]:
    """The kept days (before ``end``) with rows in the default partition."""
    column = table.column
    day = f"CAST(date_trunc('day', {column} AT TIME ZONE 'UTC') AS date)"
    query = f"SELECT DISTINCT {day} FROM {table.default} WHERE {column} >= :oldest AND {column} < :end"  # noqa: S608
    rows = connection.execute(
        text(query),
        {"oldest": oldest or datetime.min.replace(tzinfo=UTC), "end": end},
    )
    days = {day for (day,) in rows}
    connection.commit()
    return days


class _RowsArrivedError(Exception):
    """Rows of a day came into the default partition while its empty partition was being made."""


def _create(connection: Connection, table: Partitioned, day: date, *, moving: bool) -> int:
    """Create ``day``'s partition with the rows of that day the default partition held; how many.

    A new partition is usually empty (made days ahead): then only the default partition is locked,
    and queries and ingest go on meanwhile. Moving rows (``moving``) locks the whole table until the
    commit: a query planned before the attach would read the default partition without the rows
    that left it, and miss them.

    Raises:
        _RowsArrivedError: not ``moving``, but rows of the day turned up; the next round moves them.
    """
    name = table.partition(day)
    low, high = start_of(day).isoformat(), start_of(day + timedelta(days=1)).isoformat()
    within = f"{table.column} >= '{low}' AND {table.column} < '{high}'"
    # The registry first, as the writer takes it: attaching checks the foreign key to attributes.
    connection.execute(text("LOCK TABLE attributes IN SHARE ROW EXCLUSIVE MODE"))
    # No row may reach the default partition between the move and the attach.
    locked = table.name if moving else table.default
    connection.execute(text(f"LOCK TABLE {locked} IN ACCESS EXCLUSIVE MODE"))
    connection.execute(
        text(f"CREATE TABLE {name} (LIKE {table.name} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    )
    # A constraint that proves the bounds spares ATTACH a scan of the new partition.
    connection.execute(text(f"ALTER TABLE {name} ADD CONSTRAINT {name}_bounds CHECK ({within})"))
    moved = connection.execute(
        text(f"INSERT INTO {name} SELECT * FROM {table.default} WHERE {within}")  # noqa: S608
    ).rowcount
    if moved and not moving:
        raise _RowsArrivedError(f"{moved} values of the day arrived meanwhile")
    if moved:
        connection.execute(text(f"DELETE FROM {table.default} WHERE {within}"))  # noqa: S608
    connection.execute(
        text(f"ALTER TABLE {table.name} ATTACH PARTITION {name} FOR VALUES FROM ('{low}') TO ('{high}')")
    )
    connection.execute(text(f"ALTER TABLE {name} DROP CONSTRAINT {name}_bounds"))
    return moved


@contextmanager
def _step(connection: Connection, done: Round, what: str) -> Iterator[None]:
    """One transaction with bounded lock waits; a failure is logged and skipped, not raised."""
    try:
        connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        yield
        connection.commit()
    except (SQLAlchemyError, _RowsArrivedError) as exc:
        connection.rollback()
        done.skipped.append(what)
        log.warning("retention: %s skipped, tried again next round: %s", what, first_line(exc))


class Retention:
    """Runs a round :data:`FIRST_ROUND_AFTER_S` after :meth:`start`, then every :data:`INTERVAL_S`.

    Args:
        engine: the lab database.
        days: ``RETENTION_DAYS``.
        on_round: told of each round done (metrics).
    """

    def __init__(
        self,
        engine: Engine,
        days: int,
        on_round: Callable[[Round], None] | None = None,
        *,
        first_after_s: float = FIRST_ROUND_AFTER_S,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self._engine = engine
        self.days = days
        self._on_round = on_round
        self._rounds = Periodic(
            "portal-retention", self.run_once, interval_s, first_after_s=first_after_s, stop_wait_s=5.0
        )

    def start(self) -> None:
        """Start the rounds in a daemon thread."""
        self._rounds.start()

    def stop(self) -> None:
        """No round after the current one."""
        self._rounds.stop()

    def run_once(self) -> Round | None:
        """One round now; None when another portal did it or the database could not be reached."""
        try:
            done = maintain(self._engine, self.days)
        except SQLAlchemyError as exc:
            log.warning("retention round not done, database unavailable: %s", first_line(exc))
            return None
        if done is None:
            log.info("retention round left to another portal (it holds the lock)")
            return None
        if done.dropped or done.created or done.deleted or done.skipped:
            log.info(
                "retention round days=%s dropped=%s created=%s moved=%s deleted=%s skipped=%s",
                self.days or "all",
                ",".join(done.dropped) or "-",
                ",".join(done.created) or "-",
                done.moved,
                done.deleted,
                "; ".join(done.skipped) or "-",
            )
        if self._on_round is not None:
            self._on_round(done)
        return done
