"""Per-minute rollups (telemetry_1m) against a real database: history in buckets of whole minutes
summed up from them is the same as from every stored value, whatever the range cuts, with late,
repeated and text values; and removing a device takes its rollups with it."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from web.api.history import HistoryQuery, history
from web.api.params import ParamError
from web.messages import Reading
from web.removal import Selection, delete_selection
from web.storage import Store
from wire.topics import Topic

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def reading(room: str, attr: str, value: float | str, ms: float) -> Reading:
    at = T0 + timedelta(milliseconds=ms)
    return Reading(Topic("office", room, "d", attr), value, at, at)


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def both_ways(store: Store, query: HistoryQuery) -> tuple[object, object]:
    def run(rollups: bool) -> object:
        try:
            return history(store.engine, query, rollups=rollups)
        except ParamError as exc:
            return str(exc)

    return run(True), run(False)


def test_buckets_of_minutes_are_the_same_from_rollups_as_from_every_value(
    store: Store, unique_room: str
) -> None:
    rng = random.Random(7)
    # 40 minutes of a number every ~1.3 s, in batches out of order, some values twice, some late
    numbers = [
        reading(unique_room, "t", round(rng.uniform(-50, 50), 3), ms) for ms in range(0, 2_400_000, 1_300)
    ]
    numbers += [reading(unique_room, "t", 99.5, ms) for ms in (60_000, 60_000, 119_999)]  # equal times too
    rng.shuffle(numbers)
    for start in range(0, len(numbers), 97):
        store.write_batch(numbers[start : start + 97])
    # an attribute with numbers and words
    mixed = [reading(unique_room, "m", float(n) if n % 3 else f"w{n}", n * 7_000) for n in range(300)]
    store.write_batch(mixed)

    queries = []
    for _ in range(60):
        start = rng.randrange(-120_000, 2_500_000)
        end = start + rng.randrange(0, 2_600_000)
        bucket = rng.choice([60, 120, 300, 600, 3600])
        for attr in ("t", "m"):
            for agg in ("avg", "min", "max", "count", "last"):
                queries.append(
                    HistoryQuery(unique_room, "d", attr, T0_MS + start, T0_MS + end, bucket, agg, 100_000)
                )
    queries.append(
        HistoryQuery(unique_room, "d", "t", T0_MS, T0_MS + 2_400_000, 60, "avg", 5)
    )  # cut by limit
    compared = 0
    for query in queries:
        rolled, raw = both_ways(store, query)
        if isinstance(raw, str):
            assert rolled == raw, query
            continue
        assert isinstance(rolled, tuple) and isinstance(raw, tuple)
        (rolled_points, rolled_cut), (raw_points, raw_cut) = rolled, raw
        assert rolled_cut == raw_cut, query
        assert [p["ts"] for p in rolled_points] == [p["ts"] for p in raw_points], query
        for mine, theirs in zip(rolled_points, raw_points, strict=True):
            assert same(mine["value"], theirs["value"]), (query, mine, theirs)
        compared += len(raw_points)
    assert compared > 1000, "the queries must cover many buckets"


def test_a_removed_device_takes_its_rollups(store: Store, unique_room: str) -> None:
    store.write_batch([reading(unique_room, "t", 1.0, 0), reading(unique_room, "t", 2.0, 90_000)])
    query = HistoryQuery(unique_room, "d", "t", T0_MS, T0_MS + 600_000, 60, "count", 100)
    assert [p["value"] for p in history(store.engine, query)[0]] == [1, 1]
    delete_selection(store.engine, Selection(room=unique_room))
    with store.engine.connect() as connection:
        left = connection.exec_driver_sql(
            "SELECT count(*) FROM telemetry_1m m JOIN attributes a ON a.id = m.attribute_id"
            " JOIN devices d ON d.id = a.device_id JOIN rooms r ON r.id = d.room_id WHERE r.name = %s",
            (unique_room,),
        ).scalar()
    assert left == 0
    assert history(store.engine, query)[0] == []
