"""Storage helpers that need no database (the SQL itself is covered by integration tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.dialects import postgresql

from tests.web.portal_testing import make_settings
from web.cache import LatestValue
from web.messages import Reading
from web.storage import latest_per_attribute, make_engine
from wire.topics import Topic

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def reading(attr: str, value: float | str, ts: datetime, device: str = "dev") -> Reading:
    return Reading(Topic("office", "lab", device, attr), value, ts, T0)


def test_latest_per_attribute_keeps_the_newest_and_the_last_of_equals() -> None:
    later = T0 + timedelta(seconds=1)
    batch = [
        reading("t", 1.0, later),
        reading("t", 2.0, T0),  # older, arrives after: does not win
        reading("h", 3.0, T0),
        reading("h", 4.0, T0),  # same ts: the later message wins
        reading("t", 5.0, T0, device="other"),
    ]
    newest = latest_per_attribute(batch)
    assert {key: r.value for key, r in newest.items()} == {
        ("lab", "dev", "t"): 1.0,
        ("lab", "dev", "h"): 4.0,
        ("lab", "other", "t"): 5.0,
    }


def test_latest_value_event_shape() -> None:
    value = LatestValue(
        "lab", "sensor1", "temperature", 21.5, datetime(2023, 11, 14, 22, 13, 20, 123000, UTC)
    )
    assert value.key == "lab/sensor1/temperature"
    assert value.as_event() == {
        "room": "lab",
        "device": "sensor1",
        "attr": "temperature",
        "value": 21.5,
        "ts": 1700000000123,
    }


def test_engine_is_lazy_and_uses_psycopg() -> None:
    settings = make_settings(postgres_password="p@ss:w/rd%")
    engine = make_engine(settings)  # the database is unreachable: nothing may connect yet
    try:
        assert engine.url.drivername == "postgresql+psycopg"
        assert engine.url.password == "p@ss:w/rd%"
        assert engine.url.database == "lab"
        assert engine.url.username == "lab"
        assert isinstance(engine.dialect, postgresql.dialect)
    finally:
        engine.dispose()
