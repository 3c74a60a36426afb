"""The latency histogram: bucket edges, percentiles against exact ones, merging and its wire form."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stress.measure.histogram import BUCKETS, MAX_US, Histogram, bucket_of, bucket_upper

#: No example database (it would write .hypothesis/ into the working directory), no deadline.
property_test = settings(database=None, deadline=None)

micros = st.integers(min_value=0, max_value=MAX_US)
#: Mostly small latencies (the common case) with a tail across the whole range.
samples = st.lists(st.one_of(st.integers(0, 5_000), micros), min_size=1, max_size=300)


def seconds(us: int) -> float:
    """The middle of microsecond ``us`` in seconds: recording it stores exactly ``us``."""
    return (us + 0.5) / 1_000_000


def histogram_of(values: Sequence[int]) -> Histogram:
    return Histogram.of(seconds(us) for us in values)


def exact_percentile(values: Sequence[int], share: float) -> int:
    """The nearest-rank percentile: the smallest sample with ``share`` of the samples at or below it."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(share * len(ordered))) - 1]


def as_us(ms: float | None) -> int:
    assert ms is not None
    return round(ms * 1000)


def bucket_lower(index: int) -> int:
    return 0 if index == 0 else bucket_upper(index - 1) + 1


# ---------------------------------------------------------------------------- buckets


def test_the_buckets_tile_the_range_without_gaps() -> None:
    assert BUCKETS == 1728
    assert bucket_lower(0) == 0
    assert bucket_upper(BUCKETS - 1) == MAX_US
    for index in range(BUCKETS):
        low, high = bucket_lower(index), bucket_upper(index)
        assert low <= high
        assert bucket_of(low) == index
        assert bucket_of(high) == index
    assert bucket_of(MAX_US + 1) == BUCKETS - 1


@pytest.mark.parametrize(
    ("us", "index", "upper"),
    [
        (0, 0, 0),
        (1, 1, 1),
        (127, 127, 127),
        (128, 128, 129),
        (129, 128, 129),
        (130, 129, 131),
        (255, 191, 255),
        (256, 192, 259),
        (1_000, 317, 1_007),
        (1_000_000, 954, 1_007_615),
    ],
)
def test_known_values_land_in_known_buckets(us: int, index: int, upper: int) -> None:
    assert bucket_of(us) == index
    assert bucket_upper(index) == upper


@property_test
@given(micros)
def test_a_value_is_at_most_its_bucket_upper_edge_and_within_one_64th(us: int) -> None:
    upper = bucket_upper(bucket_of(us))
    assert upper >= us
    if us < 128:
        assert upper == us
    else:
        assert upper - us <= us / 64


@pytest.mark.parametrize("us", [0, 1, 64, 127])
def test_values_below_128_us_are_exact(us: int) -> None:
    histogram = Histogram()
    histogram.record(us / 1_000_000)
    assert histogram.counts[us] == 1
    assert histogram.percentile(0.5) == us / 1000
    assert histogram.max_us == us


@property_test
@given(micros)
def test_record_files_a_value_under_bucket_of(us: int) -> None:
    histogram = Histogram()
    histogram.record(seconds(us))
    assert [index for index, count in enumerate(histogram.counts) if count] == [bucket_of(us)]
    assert histogram.max_us == us


# ---------------------------------------------------------------------------- percentiles


@property_test
@given(samples)
def test_percentiles_are_the_exact_ones_rounded_up_by_at_most_one_64th(values: list[int]) -> None:
    histogram = histogram_of(values)
    for share in (0.50, 0.95, 0.99):
        true = exact_percentile(values, share)
        reported = as_us(histogram.percentile(share))
        assert reported >= bucket_lower(bucket_of(true))
        assert reported >= true  # the upper edge is reported: never an underestimate
        assert reported <= true + true / 64
        if true < 128:
            assert reported == true


@property_test
@given(samples)
def test_the_maximum_and_the_count_are_exact(values: list[int]) -> None:
    histogram = histogram_of(values)
    assert histogram.max_us == max(values)
    assert histogram.count == len(values)
    assert as_us(histogram.percentile(1.0)) == max(values)
    summary = histogram.summary()
    assert summary["max"] == max(values) / 1000
    assert summary["count"] == len(values)


def test_percentiles_of_a_known_sample() -> None:
    # 1..100 ms: p50 is the 50th sample, p95 the 95th, p99 the 99th (upper edges of their buckets)
    histogram = histogram_of([ms * 1000 for ms in range(1, 101)])
    assert histogram.summary() == {
        "p50": bucket_upper(bucket_of(50_000)) / 1000,
        "p95": bucket_upper(bucket_of(95_000)) / 1000,
        "p99": bucket_upper(bucket_of(99_000)) / 1000,
        "max": 100.0,
        "count": 100,
    }
    assert histogram.percentile(0.5) == 50.175
    assert histogram.percentile(0.0) == 1.007  # the first sample's bucket, never "nothing"


def test_a_percentile_never_exceeds_the_maximum() -> None:
    histogram = histogram_of([1_000])  # bucket 1000..1007
    assert histogram.percentile(0.99) == 1.0


def test_an_empty_histogram_has_no_percentiles() -> None:
    histogram = Histogram()
    assert histogram.percentile(0.5) is None
    assert histogram.summary() == {"p50": None, "p95": None, "p99": None, "max": None, "count": 0}


def test_times_records_one_value_several_times() -> None:
    histogram = Histogram()
    histogram.record(seconds(2_000), times=5)
    histogram.record(seconds(10))
    assert histogram.count == 6
    assert histogram.counts[bucket_of(2_000)] == 5
    assert as_us(histogram.percentile(0.1)) == 10
    assert as_us(histogram.percentile(0.5)) == 2_000


# ---------------------------------------------------------------------------- merging


@property_test
@given(samples, samples)
def test_merging_equals_the_histogram_of_all_samples(first: list[int], second: list[int]) -> None:
    merged = histogram_of(first)
    merged.merge(histogram_of(second))
    together = histogram_of(first + second)
    assert merged.counts == together.counts
    assert merged.count == together.count == len(first) + len(second)
    assert merged.max_us == together.max_us == max(first + second)
    assert merged.summary() == together.summary()
    for share in (0.5, 0.95, 0.99):
        assert as_us(merged.percentile(share)) >= exact_percentile(first + second, share)


def test_merging_an_empty_histogram_changes_nothing_either_way() -> None:
    full = histogram_of([5, 500, 50_000])
    before = (list(full.counts), full.count, full.max_us)
    full.merge(Histogram())
    assert (full.counts, full.count, full.max_us) == before
    empty = Histogram()
    empty.merge(full)
    assert (empty.counts, empty.count, empty.max_us) == before
    assert empty.counts is not full.counts


# ---------------------------------------------------------------------------- wire form


@property_test
@given(st.lists(micros, max_size=100))
def test_sparse_form_round_trips_through_json(values: list[int]) -> None:
    histogram = histogram_of(values)
    sparse = histogram.to_sparse()
    back = Histogram.from_sparse(json.loads(json.dumps(sparse)))
    assert back.counts == histogram.counts
    assert back.count == len(values)
    assert back.max_us == histogram.max_us
    assert back.summary() == histogram.summary()
    assert Histogram.from_sparse(sparse).counts == histogram.counts


def test_sparse_form_holds_only_non_empty_buckets() -> None:
    histogram = histogram_of([3, 3, 1_000])
    assert histogram.to_sparse() == {"buckets": {3: 2, bucket_of(1_000): 1}, "max_us": 1_000}
    assert Histogram().to_sparse() == {"buckets": {}, "max_us": 0}


# ---------------------------------------------------------------------------- bounds


def test_memory_stays_bounded_after_a_million_records() -> None:
    histogram = Histogram()
    record = histogram.record
    for n in range(1_000_000):
        record((n * 7_919 % 3_000_000) / 1_000_000)
    assert len(histogram.counts) == BUCKETS
    assert histogram.count == 1_000_000
    assert len(histogram.to_sparse()["buckets"]) <= BUCKETS  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-1.0, -1e-9, -1e300])
def test_negative_values_count_as_zero(value: float) -> None:
    histogram = Histogram()
    histogram.record(value)
    assert histogram.counts[0] == 1
    assert histogram.count == 1
    assert histogram.max_us == 0
    assert histogram.percentile(0.99) == 0.0


@pytest.mark.parametrize("value", [MAX_US / 1_000_000 + 1, 1e6, 1e300])
def test_huge_values_are_clamped_into_the_last_bucket(value: float) -> None:
    histogram = histogram_of([10])
    histogram.record(value)
    assert histogram.counts[BUCKETS - 1] == 1
    assert len(histogram.counts) == BUCKETS
    assert histogram.max_us == MAX_US
    assert histogram.percentile(1.0) == MAX_US / 1000
    assert histogram.percentile(0.5) == 0.01
