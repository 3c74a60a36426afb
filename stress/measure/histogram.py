"""A bounded, mergeable latency histogram (log-linear buckets, about 1.6 % resolution).

Values are recorded in microseconds into a fixed list of about 1,700 counters, whatever the
number of samples: memory never grows with a run's length. Two histograms merge by adding
their counters, so per-second, per-process and per-run figures combine exactly: the
percentiles of a merge are those of all the samples together, never an average of
percentiles.

Buckets: values below 128 µs each have their own; above, every power of two is cut into
64 equal parts, so a reported percentile is within 1/64 of the true sample (the upper
edge of its bucket is reported, never an underestimate). The maximum is kept exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from math import floor as _floor

_LINEAR = 128  # values below this many µs are exact
_SUB_BITS = 6  # 64 buckets per power of two above
_SUB = 1 << _SUB_BITS
#: Largest value recorded exactly into a bucket (about 74 minutes); larger ones go to the last.
MAX_US = (1 << 32) - 1
BUCKETS = _LINEAR + (32 - 7) * _SUB


def bucket_of(us: int) -> int:
    """The bucket index of a value in microseconds."""
    if us < _LINEAR:
        return us if us > 0 else 0
    us = min(us, MAX_US)
    shift = us.bit_length() - _SUB_BITS - 1
    return _LINEAR + (shift - 1) * _SUB + (us >> shift) - _SUB


def bucket_upper(index: int) -> int:
    """The largest value (µs) that falls into bucket ``index``."""
    if index < _LINEAR:
        return index
    shift, sub = divmod(index - _LINEAR, _SUB)
    shift += 1
    return ((sub + _SUB + 1) << shift) - 1


def _bucket_table(size: int) -> list[int]:
    """``bucket_of(us)`` for every ``us`` below ``size``, built a bucket at a time."""
    table: list[int] = []
    for index in range(BUCKETS):
        upper = min(bucket_upper(index), size - 1)
        table.extend([index] * (upper + 1 - len(table)))
        if upper == size - 1:
            break
    return table


#: The bucket of every value below about 131 ms: one list lookup for the commonest latencies.
_TABLE = _bucket_table(1 << 17)
_TABLED = len(_TABLE)


class Histogram:
    """Counts of latencies; ``record`` in seconds, percentiles in milliseconds."""

    __slots__ = ("count", "counts", "max_us")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.count = 0
        self.max_us = 0

    def record(self, seconds: float, times: int = 1) -> None:
        """Add ``times`` samples of ``seconds`` (negative values count as zero)."""
        us = _floor(seconds * 1e6)  # (cheaper than int(); below zero is bucket 0 either way)
        # bucket_of, inlined (a table below 131 ms): this runs for every message sent, acked or delivered
        if 0 <= us < _TABLED:
            index = _TABLE[us]
        elif us < 0:
            index = 0
        else:
            us = min(us, MAX_US)
            shift = us.bit_length() - _SUB_BITS - 1
            index = _LINEAR + (shift - 1) * _SUB + (us >> shift) - _SUB
        self.counts[index] += times
        self.count += times
        if us > self.max_us:  # noqa: PLR1730 - max() is a slow call on this hot path
            self.max_us = us

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s samples to this histogram."""
        if not other.count:
            return
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.count += other.count
        self.max_us = max(self.max_us, other.max_us)

    def percentile(self, share: float) -> float | None:
        """The value (ms) at or below which ``share`` (0..1) of the samples fall; None if empty."""
        if not self.count:
            return None
        rank = max(1, -(-share * self.count // 1))  # ceil, at least the first sample
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return min(bucket_upper(index), self.max_us) / 1000
        return self.max_us / 1000  # pragma: no cover - the counts always reach rank

    def summary(self) -> dict[str, float | int | None]:
        """``p50``, ``p95``, ``p99``, ``max`` (ms) and ``count``, as the run summary holds them."""
        return {
            "p50": self.percentile(0.50),
            "p95": self.percentile(0.95),
            "p99": self.percentile(0.99),
            "max": self.max_us / 1000 if self.count else None,
            "count": self.count,
        }

    def to_sparse(self) -> dict[str, object]:
        """A compact, JSON-able form (only non-empty buckets) for sending between processes."""
        return {
            "buckets": {index: count for index, count in enumerate(self.counts) if count},
            "max_us": self.max_us,
        }

    @classmethod
    def from_sparse(cls, data: Mapping[str, object]) -> Histogram:
        """The inverse of :meth:`to_sparse`."""
        histogram = cls()
        buckets = data["buckets"]
        assert isinstance(buckets, Mapping)  # noqa: S101 - produced by to_sparse
        for index, count in buckets.items():
            histogram.counts[int(index)] = int(count)
            histogram.count += int(count)
        max_us = data["max_us"]
        assert isinstance(max_us, int)  # noqa: S101
        histogram.max_us = max_us
        return histogram

    @classmethod
    def of(cls, seconds: Iterable[float]) -> Histogram:
        """A histogram of the given samples."""
        histogram = cls()
        for value in seconds:
            histogram.record(value)
        return histogram
