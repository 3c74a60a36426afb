"""The bounded hand-off of readings from the MQTT thread (ingest) to the writer."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence

from web.messages import Reading

#: How often a producer waiting for room checks whether it should stop waiting.
POLL_S = 0.2


class ReadingBuffer:
    """A bounded FIFO of readings between the MQTT thread and the writer.

    Unlike :class:`queue.Queue`, the consumer takes a whole batch under one lock, and the producer
    is woken only when the consumer waits: at tens of thousands of messages a second, the per-item
    locking and notifying of a queue is a visible share of the portal's CPU.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._items: deque[Reading] = deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._taker_waiting = False
        self._wanted = 1

    def __len__(self) -> int:
        return len(self._items)

    def put(self, reading: Reading, timeout: float | None = None) -> bool:
        """Append a reading, waiting while the buffer is full.

        Args:
            timeout: most seconds to wait for room (``None``: as long as it takes; 0: not at all).

        Returns:
            False if there was no room within ``timeout``.
        """
        with self._lock:
            if len(self._items) >= self.maxsize:
                if timeout == 0:
                    return False
                deadline = None if timeout is None else time.monotonic() + timeout
                while len(self._items) >= self.maxsize:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._not_full.wait(remaining)
            self._items.append(reading)
            if self._taker_waiting and len(self._items) >= self._wanted:
                self._not_empty.notify()
            return True

    def put_many(self, readings: Sequence[Reading], unless: threading.Event | None = None) -> None:
        """Append ``readings``, first waiting until the buffer is below its size.

        Args:
            unless: when set (already, or while waiting), append without waiting any longer.

        The buffer may end up above ``maxsize`` by less than ``len(readings)``: a batch is never
        split.
        """
        with self._lock:
            while len(self._items) >= self.maxsize and not (unless is not None and unless.is_set()):
                self._not_full.wait(POLL_S)
            self._items.extend(readings)
            if self._taker_waiting and len(self._items) >= self._wanted:
                self._not_empty.notify()

    def take(self, max_items: int, linger_s: float, wait_s: float) -> list[Reading]:
        """Remove and return up to ``max_items`` readings, oldest first.

        Args:
            max_items: the batch size.
            linger_s: once at least one reading is there, how long to wait for ``max_items``.
            wait_s: how long to wait for the first reading; an empty list after that.
        """
        with self._lock:
            if not self._items and not self._wait_for(1, wait_s):
                return []
            if len(self._items) < max_items and linger_s > 0:
                self._wait_for(max_items, linger_s)
            count = min(max_items, len(self._items))
            batch = [self._items.popleft() for _ in range(count)]
            self._not_full.notify_all()
            return batch

    def _wait_for(self, count: int, timeout: float) -> bool:
        """Wait (holding the lock) until ``count`` readings are there; False on timeout."""
        deadline = time.monotonic() + timeout
        self._wanted = count
        try:
            while len(self._items) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._taker_waiting = True
                self._not_empty.wait(remaining)
                self._taker_waiting = False
            return True
        finally:
            self._taker_waiting = False
