"""The batch writer against a fake store: batching, ack after commit, retries, bisecting, the cache."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import DataError, OperationalError

from web import writer as writer_module
from web.buffer import ReadingBuffer
from web.cache import DeviceSeen, LatestCache, LatestValue
from web.messages import Reading
from web.metrics import Metrics
from web.writer import BatchWriter
from wire.topics import Topic

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def reading(attr: str, value: float | str = 1.0, mid: int = 0) -> Reading:
    return Reading(Topic("office", "lab", "dev", attr), value, NOW, NOW, mid=mid, qos=1 if mid else 0)


def outage() -> OperationalError:
    return OperationalError("INSERT", {}, Exception("connection refused"))


def bad_data() -> DataError:
    return DataError("INSERT", {}, Exception("invalid input"))


@dataclass
class Committed:
    latest: list[LatestValue]
    seen: list[DeviceSeen]


class FakeStore:
    """Records batches and events; `fail` decides, per call, which exception (if any) to raise."""

    def __init__(
        self,
        fail: Callable[[Sequence[Reading], int], Exception | None] | None = None,
        events: list[str] | None = None,
    ) -> None:
        self.fail = fail or (lambda _batch, _call: None)
        self.calls = 0
        self.stored: list[Reading] = []
        self.forgot = 0
        self.loads = 0
        self.load_error: Exception | None = None
        self.events = events if events is not None else []
        self.lock = threading.Lock()

    def write_batch(self, readings: Sequence[Reading]) -> Committed:
        with self.lock:
            self.calls += 1
            error = self.fail(readings, self.calls)
            if error is not None:
                self.events.append("failed")
                raise error
            self.stored.extend(readings)
            self.events.append(f"committed {[r.mid for r in readings]}")
        latest = [LatestValue(r.topic.room, r.topic.device, r.topic.attr, r.value, r.ts) for r in readings]
        return Committed(latest, [DeviceSeen("lab", "dev", 1000)])

    def forget_ids(self) -> None:
        self.forgot += 1

    def load_latest(self) -> tuple[list[LatestValue], list[DeviceSeen]]:
        self.loads += 1
        if self.load_error is not None:
            raise self.load_error
        return [LatestValue("lab", "old", "t", 1.0, NOW)], [DeviceSeen("lab", "old", 5)]


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "RETRY_MIN_S", 0.01)
    monkeypatch.setattr(writer_module, "RETRY_MAX_S", 0.02)
    monkeypatch.setattr(writer_module, "CACHE_RETRY_S", 0.01)
    monkeypatch.setattr(writer_module, "POLL_S", 0.01)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


@dataclass
class Harness:
    """A writer wired to a fake store, recording what it publishes and acknowledges."""

    store: FakeStore
    buffer: ReadingBuffer
    writer: BatchWriter
    cache: LatestCache
    metrics: Metrics
    published: list[str]
    acked: list[int]


@pytest.fixture
def make_writer() -> Iterator[Callable[..., Harness]]:
    writers: list[BatchWriter] = []

    def make(store: FakeStore, batch_max: int = 1000, linger_s: float = 0.02) -> Harness:
        buffer = ReadingBuffer(10_000)
        published: list[str] = []
        acked: list[int] = []
        cache = LatestCache()
        metrics = Metrics()

        def acknowledge(readings: Sequence[Reading]) -> None:
            store.events.append(f"acked {[r.mid for r in readings]}")
            acked.extend(r.mid for r in readings)

        writer = BatchWriter(
            store,
            buffer,
            lambda values: published.extend(value.key for value in values),
            acknowledge=acknowledge,
            cache=cache,
            metrics=metrics,
            batch_max=batch_max,
            linger_s=linger_s,
        )
        writers.append(writer)
        return Harness(store, buffer, writer, cache, metrics, published, acked)

    yield make
    for writer in writers:
        writer.stop(flush_s=0.5)


def fill(harness: Harness, readings: list[Reading]) -> None:
    for item in readings:
        assert harness.buffer.put(item)


def test_buffered_readings_are_stored_in_one_batch_and_published(make_writer: Callable[..., Harness]) -> None:
    h = make_writer(FakeStore())
    items = [reading(f"a{i}", mid=i + 1) for i in range(10)]
    fill(h, items)
    h.writer.start()
    wait_until(lambda: h.writer.stored == 10)
    assert h.store.stored == items
    assert h.store.calls == 1  # all ten were waiting: one transaction
    assert h.published == [f"lab/dev/a{i}" for i in range(10)]
    assert h.writer.healthy


def test_batches_are_capped(make_writer: Callable[..., Harness]) -> None:
    h = make_writer(FakeStore(), batch_max=4)
    fill(h, [reading(f"a{i}") for i in range(10)])
    h.writer.start()
    wait_until(lambda: h.writer.stored == 10)
    assert h.store.calls == 3


def test_messages_are_acknowledged_only_after_their_batch_is_committed(
    make_writer: Callable[..., Harness],
) -> None:
    h = make_writer(FakeStore(), batch_max=2)
    fill(h, [reading("a", mid=1), reading("b", mid=2), reading("c", mid=3)])
    h.writer.start()
    wait_until(lambda: h.acked == [1, 2, 3])
    assert h.store.events == ["committed [1, 2]", "acked [1, 2]", "committed [3]", "acked [3]"]


def test_a_failing_database_gets_no_acknowledgement_and_the_same_batch_again(
    make_writer: Callable[..., Harness],
) -> None:
    h = make_writer(FakeStore(lambda _batch, call: outage() if call <= 3 else None))
    items = [reading("t", 1.0, mid=1), reading("t", 2.0, mid=2)]
    fill(h, items)
    h.writer.start()
    wait_until(lambda: h.writer.stored == 2)
    assert h.store.events == ["failed", "failed", "failed", "committed [1, 2]", "acked [1, 2]"]
    assert h.store.stored == items
    assert h.writer.dropped == 0
    assert h.writer.healthy
    assert h.metrics.registry.get_sample_value("portal_write_errors_total") == 3


def test_nothing_is_acknowledged_while_the_database_stays_down(make_writer: Callable[..., Harness]) -> None:
    h = make_writer(FakeStore(lambda _batch, _call: outage()))
    fill(h, [reading("a", mid=1)])
    h.writer.start()
    wait_until(lambda: h.store.calls >= 3)
    assert not h.writer.healthy
    h.writer.stop(flush_s=0.1)
    assert h.acked == []  # the broker keeps the message and sends it to the next portal
    assert h.store.stored == []


def test_bad_data_is_bisected_and_only_the_culprit_dropped(
    make_writer: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    store = FakeStore(lambda batch, _call: bad_data() if any(r.value == "bad" for r in batch) else None)
    h = make_writer(store)
    fill(h, [reading("a", mid=1), reading("b", mid=2), reading("c", "bad", mid=3), reading("d", mid=4)])
    h.writer.start()
    wait_until(lambda: h.writer.stored + h.writer.dropped == 4)
    assert [r.topic.attr for r in store.stored] == ["a", "b", "d"]
    assert h.writer.dropped == 1
    assert sorted(h.acked) == [1, 2, 3, 4]  # the refused one too: retrying cannot change the answer
    assert store.forgot >= 1
    assert "reading refused by the database" in caplog.text


def test_metrics_record_each_commit(make_writer: Callable[..., Harness]) -> None:
    h = make_writer(FakeStore(), batch_max=3)
    fill(h, [reading(f"a{i}") for i in range(5)])
    h.writer.start()
    wait_until(lambda: h.writer.stored == 5)
    sample = h.metrics.registry.get_sample_value
    assert sample("portal_stored_readings_total") == 5
    assert sample("portal_batch_size_count") == 2
    assert sample("portal_batch_size_sum") == 5
    assert sample("portal_commit_seconds_count") == 2


def test_the_cache_is_loaded_at_start_and_updated_after_each_commit(
    make_writer: Callable[..., Harness],
) -> None:
    h = make_writer(FakeStore())
    h.writer.start()
    wait_until(lambda: h.cache.loaded)
    assert [v.key for v in h.cache.values()] == ["lab/old/t"]
    fill(h, [reading("new", 7.0)])
    wait_until(lambda: h.writer.stored == 1)
    assert [v.key for v in h.cache.values()] == ["lab/dev/new", "lab/old/t"]
    assert [(d.device, d.last_seen) for d in h.cache.devices()] == [("dev", 1000), ("old", 5)]


def test_the_cache_is_loaded_later_when_the_database_was_down(make_writer: Callable[..., Harness]) -> None:
    store = FakeStore()
    store.load_error = outage()
    h = make_writer(store)
    h.writer.start()
    wait_until(lambda: store.loads >= 2)
    assert not h.cache.loaded
    store.load_error = None
    wait_until(lambda: h.cache.loaded)
    assert [v.key for v in h.cache.values()] == ["lab/old/t"]


def test_a_failing_live_push_does_not_stop_storage(caplog: pytest.LogCaptureFixture) -> None:
    buffer = ReadingBuffer(100)
    store = FakeStore()

    def explode(_values: list[LatestValue]) -> None:
        raise RuntimeError("socket gone")

    writer = BatchWriter(store, buffer, explode)
    writer.start()
    try:
        buffer.put(reading("a"))
        wait_until(lambda: writer.stored == 1)
        buffer.put(reading("b"))
        wait_until(lambda: writer.stored == 2)
    finally:
        writer.stop(flush_s=1.0)
    assert "live update failed" in caplog.text


def test_stop_flushes_what_is_buffered() -> None:
    buffer = ReadingBuffer(100)
    store = FakeStore()
    writer = BatchWriter(store, buffer, lambda _values: None)
    for i in range(5):
        buffer.put(reading(f"a{i}"))
    writer.start()
    writer.stop(flush_s=1.0)
    assert len(store.stored) == 5


def test_stop_gives_up_on_a_dead_database(caplog: pytest.LogCaptureFixture) -> None:
    buffer = ReadingBuffer(100)
    store = FakeStore(lambda _batch, _call: outage())
    writer = BatchWriter(store, buffer, lambda _values: None)
    buffer.put(reading("a"))
    writer.start()
    writer.stop(flush_s=0.2)
    assert store.stored == []
    assert "not stored" in caplog.text


# -- the buffer -------------------------------------------------------------------------


def test_buffer_take_waits_for_a_full_batch_at_most_the_linger_time() -> None:
    buffer = ReadingBuffer(100)
    buffer.put(reading("a"))
    started = time.monotonic()
    assert len(buffer.take(10, linger_s=0.05, wait_s=1.0)) == 1
    assert time.monotonic() - started >= 0.04
    assert buffer.take(10, linger_s=0.05, wait_s=0.01) == []


def test_buffer_take_returns_as_soon_as_the_batch_is_full() -> None:
    buffer = ReadingBuffer(100)
    buffer.put(reading("a"))
    later = threading.Timer(0.05, lambda: [buffer.put(reading("b")), buffer.put(reading("c"))])
    later.start()
    batch = buffer.take(3, linger_s=10.0, wait_s=1.0)
    later.join()
    assert [r.topic.attr for r in batch] == ["a", "b", "c"]


def test_buffer_put_waits_for_room_and_can_time_out() -> None:
    buffer = ReadingBuffer(1)
    assert buffer.put(reading("a"), timeout=0)
    assert not buffer.put(reading("b"), timeout=0)
    assert not buffer.put(reading("b"), timeout=0.01)
    threading.Timer(0.05, lambda: buffer.take(1, 0, 0)).start()
    assert buffer.put(reading("b"), timeout=5)
    assert [r.topic.attr for r in buffer.take(5, 0, 0)] == ["b"]


def test_buffer_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ReadingBuffer(0)


def test_values_go_live_once_before_the_commit_even_while_the_database_is_down(
    make_writer: Callable[..., Harness],
) -> None:
    h = make_writer(FakeStore(lambda _batch, call: outage() if call <= 3 else None))
    fill(h, [reading("t", 1.0, mid=1), reading("t", 2.0, mid=2), reading("h", 5.0, mid=3)])
    h.writer.start()
    wait_until(lambda: h.published == ["lab/dev/t", "lab/dev/h"])  # newest per attribute
    wait_until(lambda: h.writer.stored == 3)
    assert h.store.events[0] == "failed"
    assert h.published == ["lab/dev/t", "lab/dev/h"], "retries do not push the batch again"


def test_values_older_than_the_cached_latest_do_not_go_live(make_writer: Callable[..., Harness]) -> None:
    h = make_writer(FakeStore())
    later = NOW.replace(year=2026)
    h.cache.load([LatestValue("lab", "dev", "t", 9.0, later)], [])
    fill(h, [reading("t", 1.0), reading("h", 2.0)])
    h.writer.start()
    wait_until(lambda: h.writer.stored == 2)
    assert h.published == ["lab/dev/h"]


def test_a_value_is_in_the_cache_before_it_goes_live() -> None:
    cache = LatestCache()
    cache.load([], [])
    seen_in_cache: list[bool] = []

    def on_stored(values: list[LatestValue]) -> None:
        cached = {value.key for value in cache.values()}
        seen_in_cache.extend(value.key in cached for value in values)

    buffer = ReadingBuffer(100)
    writer = BatchWriter(FakeStore(), buffer, on_stored, cache=cache, metrics=Metrics())
    assert buffer.put(reading("t", 1.0), timeout=1)
    writer.start()
    try:
        wait_until(lambda: writer.stored == 1)
    finally:
        writer.stop(flush_s=0.5)
    assert seen_in_cache == [True]


def test_values_go_live_while_an_earlier_batch_is_still_being_committed(
    make_writer: Callable[..., Harness],
) -> None:
    committing, release = threading.Event(), threading.Event()

    def slow_first_commit(_batch: Sequence[Reading], call: int) -> Exception | None:
        if call == 1:
            committing.set()
            assert release.wait(5), "the test never released the first commit"
        return None

    h = make_writer(FakeStore(slow_first_commit))
    fill(h, [reading("t", 1.0, mid=1)])
    h.writer.start()
    assert committing.wait(5)
    fill(h, [reading("h", 2.0, mid=2)])
    wait_until(lambda: h.published == ["lab/dev/t", "lab/dev/h"])
    assert h.acked == [], "nothing is acknowledged before its commit"
    assert h.writer.waiting == 1, "the second reading waits for the committer"
    release.set()
    wait_until(lambda: h.acked == [1, 2])
    assert [r.mid for r in h.store.stored] == [1, 2]


def test_a_database_that_falls_behind_holds_the_buffer_back(make_writer: Callable[..., Harness]) -> None:
    release = threading.Event()
    h = make_writer(FakeStore(lambda _batch, _call: None if release.wait(5) else outage()), batch_max=2)
    h.writer.start()
    fill(h, [reading(f"a{i}", float(i), mid=i + 1) for i in range(10)])
    # Taken from the buffer, at most: a batch in the committer (2), the hand-off just under its
    # size plus one batch (3), and a batch in the feeder's hand waiting for room (2).
    wait_until(lambda: h.writer.waiting >= 2)
    time.sleep(0.1)
    assert h.writer.waiting <= 3
    assert len(h.buffer) >= 10 - 2 - 3 - 2
    release.set()
    wait_until(lambda: h.writer.stored == 10)
    assert sorted(h.acked) == list(range(1, 11))
