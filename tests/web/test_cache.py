"""The last-value cache: merging by time, filters, ordering, thread safety."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from web.cache import DeviceSeen, LatestCache, LatestValue
from wire.timestamps import epoch_ms

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def value(room: str, device: str, attr: str, v: float | str, seconds: float = 0) -> LatestValue:
    return LatestValue(room, device, attr, v, T0 + timedelta(seconds=seconds))


def test_an_empty_cache() -> None:
    cache = LatestCache()
    assert not cache.loaded
    assert cache.values() == []
    assert cache.devices() == []


def test_newest_value_wins_whatever_the_order_of_load_and_record() -> None:
    cache = LatestCache()
    cache.record([value("lab", "d", "t", 2.0, seconds=10)], [DeviceSeen("lab", "d", 2000)])
    # The database's older state arrives after the first batch: it must not win.
    cache.load(
        [value("lab", "d", "t", 1.0, seconds=5), value("lab", "d", "h", 40.0)], [DeviceSeen("lab", "d", 1000)]
    )
    assert cache.loaded
    assert [(v.attr, v.value) for v in cache.values()] == [("h", 40.0), ("t", 2.0)]
    assert cache.devices() == [DeviceSeen("lab", "d", 2000)]
    cache.record([value("lab", "d", "t", "open", seconds=20)], [DeviceSeen("lab", "d", 3000)])
    assert cache.values(device="d")[1].value == "open"
    assert cache.devices()[0].last_seen == 3000


def test_filters_by_room_and_device_and_orders_the_result() -> None:
    cache = LatestCache()
    cache.record(
        [
            value("b", "x", "t", 1.0),
            value("a", "y", "t", 2.0),
            value("a", "x", "t", 3.0),
            value("a", "x", "h", 4.0),
        ],
        [DeviceSeen("b", "x", 1), DeviceSeen("a", "y", 2), DeviceSeen("a", "x", 3)],
    )
    assert [v.key for v in cache.values()] == ["a/x/h", "a/x/t", "a/y/t", "b/x/t"]
    assert [v.key for v in cache.values(room="a")] == ["a/x/h", "a/x/t", "a/y/t"]
    assert [v.key for v in cache.values(device="x")] == ["a/x/h", "a/x/t", "b/x/t"]
    assert [v.key for v in cache.values(room="a", device="x")] == ["a/x/h", "a/x/t"]
    assert cache.values(room="nowhere") == []
    assert cache.values(room="a", device="nowhere") == []
    assert [(d.room, d.device) for d in cache.devices()] == [("a", "x"), ("a", "y"), ("b", "x")]


def test_event_shape_uses_milliseconds() -> None:
    latest = LatestValue(
        "lab", "sensor1", "temperature", 21.5, datetime(2023, 11, 14, 22, 13, 20, 123000, UTC)
    )
    assert latest.as_event() == {
        "room": "lab",
        "device": "sensor1",
        "attr": "temperature",
        "value": 21.5,
        "ts": 1700000000123,
    }
    assert epoch_ms(datetime(1970, 1, 1, tzinfo=UTC)) == 0


def test_concurrent_writers_and_readers() -> None:
    cache = LatestCache()
    errors: list[BaseException] = []

    def write(device: str) -> None:
        for i in range(500):
            cache.record([value("r", device, "t", float(i), seconds=i)], [DeviceSeen("r", device, i)])

    def read() -> None:
        try:
            for _ in range(500):
                for item in cache.values(room="r"):
                    assert item.room == "r"
                cache.devices()
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(f"d{n}",)) for n in range(4)]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [(v.device, v.value) for v in cache.values()] == [(f"d{n}", 499.0) for n in range(4)]
    assert {d.last_seen for d in cache.devices()} == {499}


def test_a_limit_takes_the_first_values_in_order() -> None:
    cache = LatestCache()
    cache.load([value("r", f"d{i}", attr, float(i)) for i in (3, 1, 2) for attr in ("b", "a")], [])
    assert [(v.device, v.attr) for v in cache.values(limit=3)] == [("d1", "a"), ("d1", "b"), ("d2", "a")]
    assert len(cache.values(limit=100)) == 6
    assert cache.values(limit=0) == []
    assert [(v.device, v.attr) for v in cache.values(room="r", device="d3", limit=1)] == [("d3", "a")]
