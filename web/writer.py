"""The batch writer: two threads that drain the ingest buffer to browsers and into the database.

::

    Ingest --put (blocks when full)--> ReadingBuffer --take--> feeder --> cache, live push
                                                                 |
                                                             hand-off (bounded)
                                                                 |
                          acknowledge (PUBACKs) <-------------- committer --COPY/commit--> PostgreSQL

The *feeder* takes what is waiting (up to ``batch_max`` readings, waiting at most ``linger_s``
for more once it holds one), puts the newest value of each attribute in the last-value cache and
hands it to the live layer at once, then passes the readings on. The *committer* stores whatever
has been passed on meanwhile (up to ``batch_max`` readings) in one transaction and only then has
the messages acknowledged to the broker and records the devices' last-seen times. Splitting the two
keeps browsers at the pace of the broker rather than of the database's commits: while one batch
commits, the next goes live. The hand-off holds at most about ``batch_max`` readings; when the
database falls behind, the feeder waits and back-pressure reaches the broker through the buffer.
(A value shown live while the database is down is stored once it is back: the batch is kept and
retried.)

Database failures never drop a batch silently:

* the database is down, refuses us, or the schema is missing (connection and programming errors):
  the same batch is retried with capped exponential backoff until it is stored or the portal stops
  (then it is left unacknowledged, and the broker delivers it again to the next portal);
* the batch holds something the database refuses (integrity or data errors): it is split in two
  and each half retried, so only the reading at fault is dropped, counted and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from web.buffer import ReadingBuffer
from web.cache import DeviceSeen, LatestCache, LatestValue
from web.db_errors import first_line
from web.messages import Reading
from web.metrics import Metrics
from web.storage import latest_per_attribute

log = logging.getLogger(__name__)

#: Most readings stored per transaction (``INGEST_BATCH_MAX``).
BATCH_MAX = 5000
#: Once a reading is in hand, how long to wait for more before writing (``INGEST_LINGER_MS``).
BATCH_LINGER_S = 0.02
#: Backoff between retries of a batch the database could not take.
RETRY_MIN_S = 0.5
RETRY_MAX_S = 5.0
#: How often an idle writer checks whether it should stop.
POLL_S = 0.2
#: On stop, how long to keep trying to store what is still buffered.
STOP_FLUSH_S = 3.0
#: Backoff between attempts to load the last-value cache while the database is down.
CACHE_RETRY_S = 5.0


class Committed(Protocol):
    """What storing a batch changed (:class:`web.storage.Committed`)."""

    @property
    def latest(self) -> list[LatestValue]: ...

    @property
    def seen(self) -> list[DeviceSeen]: ...


class BatchStore(Protocol):
    """What the writer needs from storage (:class:`web.storage.Store` in production)."""

    def write_batch(self, readings: Sequence[Reading]) -> Committed: ...

    def forget_ids(self) -> None: ...

    def load_latest(self) -> tuple[list[LatestValue], list[DeviceSeen]]: ...


class _Stopping(Exception):  # noqa: N818 - internal control flow, not an error
    """The writer was asked to stop while a batch was still failing."""


class BatchWriter:
    """Drains ``source`` to the live layer and into ``store`` in two background threads.

    Args:
        store: where batches go.
        source: the buffer ingest fills.
        on_stored: called (in the feeder thread) with the newest value per attribute of each batch
            taken, before it is written (values older than the cached latest are left out).
        acknowledge: called with the readings the writer is done with (committed, or refused by
            the database for good), so their messages can be acknowledged to the broker.
        cache: the last-value cache, loaded at start and updated after each commit.
        on_load: called with the (room, device) of every stored device once the cache is loaded
            (the cap on devices learns them).
        metrics: where batch sizes, commit times, stored readings and write errors are recorded.
        batch_max: most readings per transaction.
        linger_s: how long the feeder waits for a full batch once one reading is in hand.
    """

    def __init__(
        self,
        store: BatchStore,
        source: ReadingBuffer,
        on_stored: Callable[[list[LatestValue]], None],
        *,
        acknowledge: Callable[[Sequence[Reading]], None] = lambda _readings: None,
        cache: LatestCache | None = None,
        on_load: Callable[[list[tuple[str, str]]], None] | None = None,
        metrics: Metrics | None = None,
        batch_max: int | None = None,
        linger_s: float | None = None,
    ) -> None:
        self._store = store
        self._source = source
        self._on_stored = on_stored
        self._acknowledge = acknowledge
        self._cache = cache
        self._on_load = on_load
        self._metrics = metrics or Metrics()
        self._batch_max = batch_max if batch_max is not None else BATCH_MAX
        self._linger_s = linger_s if linger_s is not None else BATCH_LINGER_S
        self._stop = threading.Event()
        self._fed = threading.Event()  # the feeder has passed on everything it will pass on
        self._flush_deadline = float("inf")
        self._threads: list[threading.Thread] = []
        # Taken and live, waiting for the committer.
        self._handoff = ReadingBuffer(self._batch_max)
        self._lock = threading.Lock()
        self._next_cache_load = 0.0
        self.stored = 0
        self.dropped = 0
        self.last_error: str | None = None

    def start(self) -> None:
        """Start the feeder and committer threads (daemons: they never keep the process alive)."""
        if self._threads:
            return
        self._threads = [
            threading.Thread(target=self._feed, name="portal-feeder", daemon=True),
            threading.Thread(target=self._commit, name="portal-writer", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, flush_s: float = STOP_FLUSH_S) -> None:
        """Stop the threads, trying for at most ``flush_s`` seconds to store what is buffered."""
        self._flush_deadline = time.monotonic() + flush_s
        self._stop.set()
        deadline = self._flush_deadline + 2.0
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []

    @property
    def waiting(self) -> int:
        """Readings taken from the source (and live) that are not yet being written."""
        return len(self._handoff)

    @property
    def healthy(self) -> bool:
        """False while the last write attempt failed."""
        return self.last_error is None

    # -- loop -----------------------------------------------------------------------------

    def _feed(self) -> None:
        """Take batches from the source, make them live and pass them on to the committer."""
        try:
            while True:
                stopping = self._stop.is_set()
                if not stopping:
                    self._load_cache()
                batch = self._source.take(
                    self._batch_max, 0.0 if stopping else self._linger_s, 0.0 if stopping else POLL_S
                )
                if not batch:
                    if stopping:
                        break
                    continue
                self._go_live(batch)
                # Once stopping, the committer may have given up: stop waiting for it then.
                self._handoff.put_many(batch, unless=self._stop)
        finally:
            self._fed.set()

    def _commit(self) -> None:
        """Store what the feeder passed on, one transaction per batch, until it is done."""
        log.info("writer started batch_max=%s linger_ms=%s", self._batch_max, round(self._linger_s * 1000))
        while True:
            fed = self._fed.is_set()
            batch = self._handoff.take(
                self._batch_max, 0.0 if fed else self._linger_s, 0.0 if fed else POLL_S
            )
            if not batch:
                if fed:
                    break
                continue
            try:
                self._write(batch)
            except _Stopping:
                left = len(batch) + len(self._handoff) + len(self._source)
                log.error(
                    "writer stopped with %s readings not stored (database unavailable); "
                    "the broker delivers them again at the next start",
                    left,
                )
                return
            except Exception:  # the writer thread must outlive any bug in a batch
                log.exception("writer failed on a batch of %s readings; dropped", len(batch))
                self._count_dropped(len(batch))
                self._release(batch)
        log.info("writer stopped stored=%s dropped=%s", self.stored, self.dropped)

    def _load_cache(self) -> None:
        """Fill the last-value cache from the database, once; retried while the database is down."""
        if self._cache is None or self._cache.loaded or time.monotonic() < self._next_cache_load:
            return
        try:
            values, devices = self._store.load_latest()
        except SQLAlchemyError as exc:
            self._next_cache_load = time.monotonic() + CACHE_RETRY_S
            log.warning("last-value cache not loaded yet, database unavailable: %s", first_line(exc))
            return
        self._cache.load(values, devices)
        if self._on_load is not None:
            self._on_load([(item.room, item.device) for item in devices])
        log.info("last-value cache loaded values=%s devices=%s", len(values), len(devices))

    def _write(self, batch: Sequence[Reading]) -> None:
        """Store ``batch`` or, for data errors, each storable part of it."""
        delay = RETRY_MIN_S
        while True:
            started = time.perf_counter()
            try:
                committed = self._store.write_batch(batch)
            except (IntegrityError, DataError) as exc:
                self._metrics.write_errors.inc()
                self._store.forget_ids()  # a deleted device makes cached ids violate foreign keys
                if len(batch) == 1:
                    log.error(
                        "reading refused by the database, dropped topic=%s reason=%s",
                        batch[0].topic,
                        first_line(exc),
                    )
                    self._count_dropped(1)
                    self._release(batch)
                    return
                log.warning("database refused a batch of %s, splitting it: %s", len(batch), first_line(exc))
                middle = len(batch) // 2
                self._write(batch[:middle])
                self._write(batch[middle:])
                return
            except SQLAlchemyError as exc:
                self._metrics.write_errors.inc()
                self._fail(exc, len(batch))
                if self._stop.is_set():
                    remaining = self._flush_deadline - time.monotonic()
                    if remaining <= 0:
                        raise _Stopping from exc
                    time.sleep(min(delay, remaining))
                else:
                    self._stop.wait(delay)  # a stop request ends the wait: retry once more at once
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            break
        self._metrics.commit_seconds.observe(time.perf_counter() - started)
        self._metrics.batch_size.observe(len(batch))
        self._metrics.stored_readings.inc(len(batch))
        if self.last_error is not None:
            log.info("database writes recovered")
        self.last_error = None
        with self._lock:
            self.stored += len(batch)
        self._release(batch)
        if self._cache is not None:
            self._cache.record(committed.latest, committed.seen)

    def _release(self, readings: Sequence[Reading]) -> None:
        try:
            self._acknowledge(readings)
        except Exception:  # the broker sends them again; storage must go on
            log.exception("acknowledging %s messages failed", len(readings))

    def _fail(self, exc: SQLAlchemyError, size: int) -> None:
        message = first_line(exc)
        if message != self.last_error:  # one line per distinct failure, not per retry
            log.error("database write failed, batch of %s kept for retry: %s", size, message)
        self.last_error = message

    def _go_live(self, batch: Sequence[Reading]) -> None:
        """Put the newest value per attribute of `batch` in the cache, then push it to browsers.

        The cache first: a browser that subscribes meanwhile joins its channel before reading the
        cache for its snapshot, so it gets each value either in the snapshot or as an update.
        """
        newest = [
            LatestValue(r.topic.room, r.topic.device, r.topic.attr, r.value, r.ts)
            for r in latest_per_attribute(batch).values()
        ]
        if self._cache is not None:
            newest = self._cache.newer(newest)
            self._cache.record(newest, [])
        self._publish(newest)

    def _publish(self, changed: list[LatestValue]) -> None:
        if not changed:
            return
        try:
            self._on_stored(changed)
        except Exception:  # pushing to browsers must never stop storage
            log.exception("live update failed for %s values", len(changed))

    def _count_dropped(self, count: int) -> None:
        with self._lock:
            self.dropped += count
