"""Work the portal repeats in the background: one daemon thread (a greenlet when served) per job."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Runs ``work`` every ``interval_s`` seconds in a daemon thread, from :meth:`start` to :meth:`stop`.

    Args:
        name: the thread's name, and what a failed round is logged as.
        work: one round; an exception is logged and the rounds go on.
        interval_s: seconds between two rounds.
        first_after_s: seconds from :meth:`start` to the first round (``interval_s`` when omitted).
        stop_wait_s: how long :meth:`stop` waits for a round under way.
    """

    def __init__(
        self,
        name: str,
        work: Callable[[], object],
        interval_s: float,
        *,
        first_after_s: float | None = None,
        stop_wait_s: float = 2.0,
    ) -> None:
        self.name = name
        self._work = work
        self.interval_s = interval_s
        self._first_after_s = interval_s if first_after_s is None else first_after_s
        self._stop_wait_s = stop_wait_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the rounds (once; a second call does nothing)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """No round after this one; wait a little for a round under way."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._stop_wait_s)
            self._thread = None

    def _run(self) -> None:
        wait = self._first_after_s
        while not self._stop.wait(wait):
            try:
                self._work()
            except Exception:  # the rounds must outlive a bug in one of them
                log.exception("%s: a round failed", self.name)
            wait = self.interval_s
