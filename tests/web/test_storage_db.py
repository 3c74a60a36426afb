"""Storage against the session's real PostgreSQL: registry, COPY, latest values, errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from tests.conftest import RunningLab
from web.messages import Reading
from web.presence import UNKNOWN_AGE
from web.storage import Store
from wire.timestamps import epoch_ms
from wire.topics import Topic

pytestmark = pytest.mark.integration

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def reading(
    room: str, device: str, attr: str, value: float | str, ts: float, *, received: float | None = None
) -> Reading:
    return Reading(
        Topic("office", room, device, attr), value, at(ts), at(ts if received is None else received)
    )


def rows(lab: RunningLab, room: str) -> list[tuple[object, ...]]:
    with lab.db() as db:
        return db.execute(
            "SELECT device, attr, ts, value_num, value_text FROM readings"
            " WHERE room = %s ORDER BY device, attr, ts",
            (room,),
        ).fetchall()


def test_a_batch_is_stored_with_its_registry_and_latest_values(
    lab: RunningLab, store: Store, unique_room: str
) -> None:
    batch = [
        reading(unique_room, "d1", "t", 20.0, ts=1),
        reading(unique_room, "d1", "t", 22.0, ts=3),
        reading(unique_room, "d1", "t", 21.0, ts=2, received=4),  # late: stored, does not win
        reading(unique_room, "d1", "state", "open", ts=1),
        reading(unique_room, "d2", "t", 5.0, ts=1, received=9),
    ]
    committed = store.write_batch(batch)
    assert rows(lab, unique_room) == [
        ("d1", "state", at(1), None, "open"),
        ("d1", "t", at(1), 20.0, None),
        ("d1", "t", at(2), 21.0, None),
        ("d1", "t", at(3), 22.0, None),
        ("d2", "t", at(1), 5.0, None),
    ]
    assert sorted((v.device, v.attr, v.value) for v in committed.latest) == [
        ("d1", "state", "open"),
        ("d1", "t", 22.0),
        ("d2", "t", 5.0),
    ]
    assert sorted((d.device, d.last_seen) for d in committed.seen) == [
        ("d1", epoch_ms(at(4))),
        ("d2", epoch_ms(at(9))),
    ]
    with lab.db() as db:
        seen = db.execute(
            "SELECT d.name, d.first_seen, d.last_seen FROM devices d JOIN rooms r ON r.id = d.room_id"
            " WHERE r.name = %s ORDER BY d.name",
            (unique_room,),
        ).fetchall()
    assert seen == [("d1", at(1), at(4)), ("d2", at(9), at(9))]

    # An older value in a later batch is stored but does not become latest; last_seen never goes back.
    committed = store.write_batch([reading(unique_room, "d1", "t", 0.0, ts=0, received=2)])
    assert committed.latest == []
    values, devices = store.load_latest()
    mine = {(v.device, v.attr): v.value for v in values if v.room == unique_room}
    assert mine == {("d1", "state"): "open", ("d1", "t"): 22.0, ("d2", "t"): 5.0}
    assert {(d.device, d.last_seen) for d in devices if d.room == unique_room} == {
        ("d1", epoch_ms(at(4))),
        ("d2", epoch_ms(at(9))),
    }


def test_a_second_portal_finds_the_existing_registry(lab: RunningLab, store: Store, unique_room: str) -> None:
    store.write_batch([reading(unique_room, "d", "t", 1.0, ts=1)])
    other = Store(store.engine)  # empty id cache, like another replica or a restarted portal
    other.write_batch([reading(unique_room, "d", "t", 2.0, ts=2)])
    with lab.db() as db:
        count = db.execute(
            "SELECT count(*) FROM attributes a JOIN devices d ON d.id = a.device_id"
            " JOIN rooms r ON r.id = d.room_id WHERE r.name = %s",
            (unique_room,),
        ).fetchone()
    assert count == (1,)
    assert [row[3] for row in rows(lab, unique_room)] == [1.0, 2.0]


def test_a_stale_id_cache_is_an_integrity_error_until_forgotten(
    lab: RunningLab, store: Store, unique_room: str
) -> None:
    store.write_batch([reading(unique_room, "d", "t", 1.0, ts=1)])
    with lab.db() as db:
        db.execute("DELETE FROM rooms WHERE name = %s", (unique_room,))  # cascades to the registry
    with pytest.raises(IntegrityError):
        store.write_batch([reading(unique_room, "d", "t", 2.0, ts=2)])
    store.forget_ids()  # what the writer does on an integrity error
    store.write_batch([reading(unique_room, "d", "t", 3.0, ts=3)])
    assert [row[3] for row in rows(lab, unique_room)] == [3.0]


HOSTILE_TEXT = [
    'say "hi"',
    "back\\slash",
    '\\"',
    "{a,b}",
    "NULL",
    "null",
    "",
    " padded ",
    "tab\there",
    "line\nbreak",
    "ünïcødé ✓",
    "'; DROP TABLE latest; --",
]


def test_text_values_of_any_shape_become_latest_exactly(
    lab: RunningLab, store: Store, unique_room: str
) -> None:
    batch = [reading(unique_room, "d1", f"a{i}", text, ts=1) for i, text in enumerate(HOSTILE_TEXT)]
    batch.append(reading(unique_room, "d1", "num", 1e-300, ts=1))
    batch.append(reading(unique_room, "d1", "big", -1.7976931348623157e308, ts=1))
    store.write_batch(batch)
    values, _devices = store.load_latest()
    mine = {v.attr: v.value for v in values if v.room == unique_room}
    expected: dict[str, float | str] = {f"a{i}": text for i, text in enumerate(HOSTILE_TEXT)}
    expected.update(num=1e-300, big=-1.7976931348623157e308)
    assert mine == expected


def test_presence_is_kept_apart_newest_by_time_and_does_not_move_last_seen(
    store: Store, lab: RunningLab, unique_room: str
) -> None:
    """A device may announce itself before any value; a late or unknown-age presence never wins."""
    first = store.write_batch([reading(unique_room, "d", "$state", "online", 10, received=10)])
    assert [(v.attr, v.value) for v in first.latest] == [("$state", "online")]
    assert first.seen == []
    store.write_batch([reading(unique_room, "d", "t", 1.0, 20, received=20)])
    store.write_batch([reading(unique_room, "d", "$state", "offline", 30, received=31)])
    late = store.write_batch([reading(unique_room, "d", "$state", "online", 25, received=40)])
    assert late.latest == [], "an older presence changes nothing"
    unknown = Reading(Topic("office", unique_room, "d", "$state"), "lost", UNKNOWN_AGE, at(50))
    assert store.write_batch([unknown]).latest == []
    with lab.db() as db:
        row = db.execute(
            "SELECT d.presence, d.presence_at, d.last_seen FROM devices d JOIN rooms r ON r.id = d.room_id"
            " WHERE r.name = %s AND d.name = 'd'",
            (unique_room,),
        ).fetchone()
    assert row == ("offline", at(30), at(20))
    assert rows(lab, unique_room) == [("d", "t", at(20), 1.0, None)], "presence is not telemetry"
    values, _seen = store.load_latest()
    assert {(v.attr, v.value) for v in values if v.room == unique_room} == {("t", 1.0), ("$state", "offline")}
