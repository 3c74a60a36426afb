"""The batch writer against a fake store: batching, retry on outages, bisecting bad data."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import DataError, OperationalError

from web import writer as writer_module
from web.messages import Reading
from web.storage import LatestValue
from web.topics import Topic
from web.writer import BatchWriter

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def reading(attr: str, value: float | str = 1.0) -> Reading:
    return Reading(Topic("office", "lab", "dev", attr), value, NOW, NOW)


def outage() -> OperationalError:
    return OperationalError("INSERT", {}, Exception("connection refused"))


def bad_data() -> DataError:
    return DataError("INSERT", {}, Exception("invalid input"))


class FakeStore:
    """Records batches; `fail` decides, per call, which exception (if any) to raise."""

    def __init__(self, fail: Callable[[Sequence[Reading], int], Exception | None] | None = None) -> None:
        self.fail = fail or (lambda _batch, _call: None)
        self.calls = 0
        self.stored: list[Reading] = []
        self.forgot = 0
        self.lock = threading.Lock()

    def write_batch(self, readings: Sequence[Reading]) -> list[LatestValue]:
        with self.lock:
            self.calls += 1
            error = self.fail(readings, self.calls)
            if error is not None:
                raise error
            self.stored.extend(readings)
        return [LatestValue(r.topic.room, r.topic.device, r.topic.attr, r.value, r.ts) for r in readings]

    def forget_ids(self) -> None:
        self.forgot += 1


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "RETRY_MIN_S", 0.01)
    monkeypatch.setattr(writer_module, "RETRY_MAX_S", 0.02)


def run(store: FakeStore, readings: list[Reading], expect_stored: int) -> tuple[BatchWriter, list[str]]:
    source: queue.Queue[Reading] = queue.Queue()
    published: list[str] = []
    done = threading.Event()

    def on_stored(values: list[LatestValue]) -> None:
        published.extend(value.key for value in values)

    for item in readings:
        source.put(item)
    writer = BatchWriter(store, source, on_stored)
    writer.start()
    try:
        for _ in range(500):
            if writer.stored + writer.dropped >= expect_stored:
                done.set()
                break
            threading.Event().wait(0.01)
    finally:
        writer.stop(flush_s=1.0)
    assert done.is_set(), (writer.stored, writer.dropped)
    return writer, published


def test_queued_readings_are_stored_in_batches_and_published() -> None:
    store = FakeStore()
    items = [reading(f"a{i}") for i in range(10)]
    writer, published = run(store, items, expect_stored=10)
    assert store.stored == items
    assert store.calls == 1  # all ten were waiting: one transaction
    assert published == [f"lab/dev/a{i}" for i in range(10)]
    assert writer.stored == 10
    assert writer.healthy


def test_batches_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "BATCH_MAX", 4)
    store = FakeStore()
    run(store, [reading(f"a{i}") for i in range(10)], expect_stored=10)
    assert store.calls == 3


def test_database_outage_retries_the_same_batch_without_loss() -> None:
    store = FakeStore(lambda _batch, call: outage() if call <= 3 else None)
    items = [reading("t", 1.0), reading("t", 2.0)]
    writer, published = run(store, items, expect_stored=2)
    assert store.calls == 4
    assert store.stored == items
    assert writer.dropped == 0
    assert writer.healthy
    assert published == ["lab/dev/t", "lab/dev/t"]


def test_bad_data_is_bisected_and_only_the_culprit_dropped(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore(lambda batch, _call: bad_data() if any(r.value == "bad" for r in batch) else None)
    items = [reading("a"), reading("b"), reading("c", "bad"), reading("d"), reading("e")]
    writer, _ = run(store, items, expect_stored=5)
    assert [r.topic.attr for r in store.stored] == ["a", "b", "d", "e"]
    assert writer.dropped == 1
    assert writer.stored == 4
    assert store.forgot >= 1
    assert "reading refused by the database" in caplog.text


def test_a_failing_live_push_does_not_stop_storage(caplog: pytest.LogCaptureFixture) -> None:
    source: queue.Queue[Reading] = queue.Queue()
    store = FakeStore()

    def explode(_values: list[LatestValue]) -> None:
        raise RuntimeError("socket gone")

    writer = BatchWriter(store, source, explode)
    writer.start()
    source.put(reading("a"))
    for _ in range(200):
        if writer.stored:
            break
        threading.Event().wait(0.01)
    source.put(reading("b"))
    for _ in range(200):
        if writer.stored == 2:
            break
        threading.Event().wait(0.01)
    writer.stop(flush_s=1.0)
    assert writer.stored == 2
    assert "live update failed" in caplog.text


def test_stop_flushes_what_is_queued() -> None:
    source: queue.Queue[Reading] = queue.Queue()
    store = FakeStore()
    writer = BatchWriter(store, source, lambda _values: None)
    for i in range(5):
        source.put(reading(f"a{i}"))
    writer.start()
    writer.stop(flush_s=1.0)
    assert len(store.stored) == 5


def test_stop_gives_up_on_a_dead_database(caplog: pytest.LogCaptureFixture) -> None:
    source: queue.Queue[Reading] = queue.Queue()
    store = FakeStore(lambda _batch, _call: outage())
    writer = BatchWriter(store, source, lambda _values: None)
    source.put(reading("a"))
    writer.start()
    writer.stop(flush_s=0.2)
    assert store.stored == []
    assert "not stored" in caplog.text
