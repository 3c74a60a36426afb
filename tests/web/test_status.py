"""The portal's own status (web/status.py) from real parts: a writer that stores nothing while values
wait is a stalled ingest after 3 s; the database and broker out of reach are named; a change is sent
once, not at every look."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.conftest import RunningLab
from tests.web.portal_testing import make_settings
from web.buffer import ReadingBuffer
from web.ingest import Ingest
from web.messages import Reading
from web.metrics import Metrics
from web.status import STALLED_AFTER_S, Status, StatusWatch
from web.storage import Store, make_engine
from web.writer import BatchWriter
from wire.topics import Topic


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def watch_of(store: Store, buffer: ReadingBuffer, clock: Clock, sent: list[Status]) -> StatusWatch:
    settings = make_settings()
    writer = BatchWriter(store, buffer, lambda _values: None)  # never started: it stores nothing
    ingest = Ingest(settings, buffer, Metrics())  # never started: the broker is out of reach
    return StatusWatch(ingest, writer, store, waiting=lambda: len(buffer), emit=sent.append, clock=clock)


@pytest.mark.integration
def test_values_that_wait_with_none_stored_are_a_stalled_ingest(lab: RunningLab) -> None:
    settings = make_settings(
        postgres_port=lab.port("POSTGRES_PORT"), postgres_password=lab.env["POSTGRES_PASSWORD"]
    )
    store = Store(make_engine(settings))
    buffer = ReadingBuffer(100)
    clock, sent = Clock(), list[Status]()
    watch = watch_of(store, buffer, clock, sent)
    seen = watch.look()
    assert (seen.broker, seen.database, seen.ingest, seen.waiting) == ("down", "up", "flowing", 0)
    assert seen.problem.startswith("broker unreachable (disconnected)")
    assert len(sent) == 1

    now = datetime.now(UTC)
    buffer.put(Reading(Topic("office", "r", "d", "t"), 1.0, now, now))
    clock.now += STALLED_AFTER_S - 0.5
    assert watch.look().ingest == "flowing"
    clock.now += 1.0
    stalled = watch.look()
    assert (stalled.ingest, stalled.waiting) == ("stalled", 1)
    assert len(sent) == 2
    assert watch.look() == stalled and len(sent) == 2, "the same status is sent once"
    assert watch.as_json()["ingest"] == "stalled"


def test_a_database_out_of_reach_is_named() -> None:
    store = Store(make_engine(make_settings()))
    clock, sent = Clock(), list[Status]()
    seen = watch_of(store, ReadingBuffer(10), clock, sent).look()
    assert (seen.broker, seen.database) == ("down", "down")
    assert sent == [seen]
