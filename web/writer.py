"""The batch writer: one thread that drains the ingest queue into the database.

It takes what is waiting (up to :data:`BATCH_MAX` readings, waiting at most :data:`BATCH_LINGER_S`
for more once it holds one), stores it in one transaction, then tells the live layer what changed.

Database failures never drop a batch silently:

* the database is down, refuses us, or the schema is missing (connection and programming errors):
  the same batch is retried with capped exponential backoff until it is stored or the portal stops;
* the batch holds something the database refuses (integrity or data errors): it is split in two
  and each half retried, so only the reading at fault is dropped, counted and logged.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from web.messages import Reading
from web.storage import LatestValue

log = logging.getLogger(__name__)

#: Most readings stored per transaction.
BATCH_MAX = 1000
#: Once a reading is in hand, how long to wait for more before writing.
BATCH_LINGER_S = 0.05
#: Backoff between retries of a batch the database could not take.
RETRY_MIN_S = 0.5
RETRY_MAX_S = 5.0
#: How often an idle writer checks whether it should stop.
POLL_S = 0.2
#: On stop, how long to keep trying to store what is still queued.
STOP_FLUSH_S = 3.0


class BatchStore(Protocol):
    """What the writer needs from storage (:class:`web.storage.Store` in production)."""

    def write_batch(self, readings: Sequence[Reading]) -> list[LatestValue]: ...

    def forget_ids(self) -> None: ...


class _Stopping(Exception):  # noqa: N818 - internal control flow, not an error
    """The writer was asked to stop while a batch was still failing."""


class BatchWriter:
    """Drains ``source`` into ``store`` in a background thread.

    Args:
        store: where batches go.
        source: the queue ingest fills.
        on_stored: called (in the writer thread) with the values that became latest, after commit.
    """

    def __init__(
        self,
        store: BatchStore,
        source: queue.Queue[Reading],
        on_stored: Callable[[list[LatestValue]], None],
    ) -> None:
        self._store = store
        self._source = source
        self._on_stored = on_stored
        self._stop = threading.Event()
        self._flush_deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.stored = 0
        self.dropped = 0
        self.last_error: str | None = None

    def start(self) -> None:
        """Start the writer thread (a daemon: it never keeps the process alive on its own)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="portal-writer", daemon=True)
        self._thread.start()

    def stop(self, flush_s: float = STOP_FLUSH_S) -> None:
        """Stop the thread, trying for at most ``flush_s`` seconds to store what is queued."""
        self._flush_deadline = time.monotonic() + flush_s
        self._stop.set()
        if self._thread is not None:
            self._thread.join(flush_s + 2.0)
            self._thread = None

    @property
    def healthy(self) -> bool:
        """False while the last write attempt failed."""
        return self.last_error is None

    # -- loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        log.info("writer started batch_max=%s", BATCH_MAX)
        while True:
            stopping = self._stop.is_set()
            batch = self._take_batch(block=not stopping)
            if not batch:
                if stopping:
                    break
                continue
            try:
                self._write(batch)
            except _Stopping:
                left = len(batch) + self._source.qsize()
                log.error("writer stopped with %s readings not stored: database unavailable", left)
                return
            except Exception:  # the writer thread must outlive any bug in a batch
                log.exception("writer failed on a batch of %s readings; dropped", len(batch))
                self._count_dropped(len(batch))
        log.info("writer stopped stored=%s dropped=%s", self.stored, self.dropped)

    def _take_batch(self, *, block: bool) -> list[Reading]:
        batch: list[Reading] = []
        try:
            batch.append(self._source.get(timeout=POLL_S) if block else self._source.get_nowait())
        except queue.Empty:
            return batch
        deadline = time.monotonic() + BATCH_LINGER_S
        while len(batch) < BATCH_MAX:
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0:
                    batch.append(self._source.get(timeout=remaining))
                else:
                    batch.append(self._source.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write(self, batch: Sequence[Reading]) -> None:
        """Store ``batch`` or, for data errors, each storable part of it."""
        delay = RETRY_MIN_S
        while True:
            try:
                changed = self._store.write_batch(batch)
            except (IntegrityError, DataError) as exc:
                self._store.forget_ids()  # a deleted device makes cached ids violate foreign keys
                if len(batch) == 1:
                    log.error(
                        "reading refused by the database, dropped topic=%s reason=%s",
                        batch[0].topic,
                        _first_line(exc),
                    )
                    self._count_dropped(1)
                    return
                log.warning("database refused a batch of %s, splitting it: %s", len(batch), _first_line(exc))
                middle = len(batch) // 2
                self._write(batch[:middle])
                self._write(batch[middle:])
                return
            except SQLAlchemyError as exc:
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
        if self.last_error is not None:
            log.info("database writes recovered")
        self.last_error = None
        with self._lock:
            self.stored += len(batch)
        self._publish(changed)

    def _fail(self, exc: SQLAlchemyError, size: int) -> None:
        message = _first_line(exc)
        if message != self.last_error:  # one line per distinct failure, not per retry
            log.error("database write failed, batch of %s kept for retry: %s", size, message)
        self.last_error = message

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


def _first_line(exc: BaseException) -> str:
    original = getattr(exc, "orig", None)
    text = str(original if original is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
