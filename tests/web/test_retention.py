"""Retention against a real PostgreSQL: day partitions made ahead, odd values kept in the default
partition and moved to their day once it is made, days past RETENTION_DAYS dropped whole with their
rollups, one portal doing a round at a time, a long reader delaying a drop (not ingest), values
written while their day is attached all kept, the migration turning existing tables into partitioned
ones without losing a row, and the portal doing all of this on its own from RETENTION_DAYS."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import cast

import pytest
import requests
from sqlalchemy import Engine, text

from labctl.config import LabConfig
from labctl.services import Portal as PortalService
from tests.conftest import RunningLab, own_lab
from tests.web.portal_testing import api_token, lab_engine, publish_as, wait_for
from web.api.history import HistoryQuery, history
from web.buffer import ReadingBuffer
from web.messages import Reading
from web.retention import DAYS_AHEAD, LOCK_ID, maintain
from web.storage import Store
from web.writer import BatchWriter
from wire.topics import Topic

pytestmark = pytest.mark.integration

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def database(new_lab_config: Callable[..., LabConfig]) -> Iterator[RunningLab]:
    """A PostgreSQL of this module's own, migrated: rounds act on the whole database."""
    with own_lab(new_lab_config, "retention", ("db",)) as running:
        cast(PortalService, running.lab.service("web")).migrate()
        yield running


@pytest.fixture
def engine(database: RunningLab) -> Iterator[Engine]:
    """The module's database emptied: no registry, no telemetry, no day partitions."""
    engine = lab_engine(database)
    with engine.begin() as connection:
        for table in ("telemetry", "telemetry_1m"):
            for (name,) in connection.execute(
                text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = CAST(:t AS regclass) AND c.relname <> :t || '_default'"
                ),
                {"t": table},
            ):
                connection.execute(text(f"DROP TABLE {name}"))
        connection.execute(text("TRUNCATE rooms CASCADE"))
    yield engine
    engine.dispose()


def reading(at: datetime, value: float = 1.0, attr: str = "t", device: str = "d") -> Reading:
    return Reading(Topic("office", "r", device, attr), value, at, at)


def where(engine: Engine, table: str = "telemetry") -> dict[str, int]:
    """Rows per partition."""
    with engine.connect() as connection:
        query = f"SELECT tableoid::regclass::text, count(*) FROM {table} GROUP BY 1"  # noqa: S608
        return {str(name): int(count) for name, count in connection.execute(text(query))}


def partitions(engine: Engine, table: str = "telemetry") -> list[str]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = CAST(:t AS regclass) ORDER BY 1"
            ),
            {"t": table},
        )
        return [name for (name,) in rows]


def test_a_round_prepares_today_and_the_days_ahead_in_both_tables(engine: Engine) -> None:
    done = maintain(engine, 30, NOW)

    assert done is not None
    days = [f"{NOW + ahead * DAY:%Y%m%d}" for ahead in range(DAYS_AHEAD + 1)]
    assert done.created == [f"telemetry_p{day}" for day in days] + [f"telemetry_1m_p{day}" for day in days]
    assert partitions(engine) == ["telemetry_default"] + [f"telemetry_p{day}" for day in days]
    again = maintain(engine, 30, NOW)
    assert again is not None and (again.created, again.dropped, again.moved, again.deleted) == ([], [], 0, 0)


def test_each_value_lands_in_its_days_partition_and_odd_ones_in_the_default(engine: Engine) -> None:
    maintain(engine, 30, NOW)

    Store(engine).write_batch(
        [reading(NOW), reading(NOW + DAY), reading(NOW + 30 * DAY), reading(NOW - 400 * DAY)]
    )

    assert where(engine) == {"telemetry_p20260615": 1, "telemetry_p20260616": 1, "telemetry_default": 2}
    assert where(engine, "telemetry_1m") == {
        "telemetry_1m_p20260615": 1,
        "telemetry_1m_p20260616": 1,
        "telemetry_1m_default": 2,
    }


def test_a_kept_days_values_move_out_of_the_default_partition_and_read_the_same(engine: Engine) -> None:
    maintain(engine, 30, NOW)
    three_days_ago = datetime(2026, 6, 12, tzinfo=UTC)
    Store(engine).write_batch(
        [reading(three_days_ago + timedelta(seconds=s), float(s)) for s in range(0, 86_400, 60)]
    )
    query = HistoryQuery(
        "r", "d", "t", int(three_days_ago.timestamp() * 1000), int(NOW.timestamp() * 1000), 3600, "avg", 1000
    )
    before = history(engine, query)
    assert where(engine) == {"telemetry_default": 1440}

    done = maintain(engine, 30, NOW)

    assert done is not None
    assert done.created == ["telemetry_p20260612", "telemetry_1m_p20260612"]
    assert done.moved == 1440 + 1440  # every value, and every minute of its rollups
    assert where(engine) == {"telemetry_p20260612": 1440}
    assert where(engine, "telemetry_1m") == {"telemetry_1m_p20260612": 1440}
    assert history(engine, query) == before
    assert len(before[0]) == 24


def test_days_past_the_limit_are_dropped_whole_with_their_rollups(engine: Engine) -> None:
    first = NOW - 10 * DAY
    maintain(engine, 0, first)  # partitions from ten days ago on, as a portal running since then made them
    for day in range(11):
        maintain(engine, 0, first + day * DAY)
    Store(engine).write_batch(
        [reading(first + day * DAY) for day in range(11)] + [reading(datetime(2025, 1, 1, tzinfo=UTC))]
    )

    done = maintain(engine, 5, NOW)

    # kept: everything from NOW - 5 days (2026-06-10 12:00); a day goes once all of it is older
    assert done is not None
    gone = [f"{NOW - days * DAY:%Y%m%d}" for days in range(10, 5, -1)]
    assert done.dropped == [f"telemetry_p{day}" for day in gone] + [f"telemetry_1m_p{day}" for day in gone]
    assert done.deleted == 2, "the odd old value in the default partition, and its rollup"
    assert sum(where(engine).values()) == 6
    assert sum(where(engine, "telemetry_1m").values()) == 6
    assert partitions(engine)[:2] == ["telemetry_default", "telemetry_p20260610"]
    with engine.connect() as connection:
        oldest = connection.execute(text("SELECT min(ts) FROM readings")).scalar()
    assert oldest == NOW - 5 * DAY


def test_zero_days_keeps_everything(engine: Engine) -> None:
    Store(engine).write_batch([reading(datetime(2020, 2, 29, 23, 59, tzinfo=UTC)), reading(NOW)])

    done = maintain(engine, 0, NOW)

    assert done is not None and (done.dropped, done.deleted) == ([], 0)
    assert where(engine) == {"telemetry_p20200229": 1, "telemetry_p20260615": 1}


def test_a_round_is_left_to_the_portal_holding_the_lock(engine: Engine) -> None:
    with engine.connect() as other:
        assert other.execute(text("SELECT pg_try_advisory_lock(:id)"), {"id": LOCK_ID}).scalar()
        assert maintain(engine, 30, NOW) is None
        assert partitions(engine) == ["telemetry_default"]
        other.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": LOCK_ID})
    done = maintain(engine, 30, NOW)
    assert done is not None and done.created


def test_a_long_reader_puts_a_drop_off_to_the_next_round_and_ingest_goes_on(engine: Engine) -> None:
    maintain(engine, 0, NOW - 3 * DAY)
    store = Store(engine)
    store.write_batch([reading(NOW - 3 * DAY)])
    with engine.connect() as reader:
        reader.execute(text("SELECT count(*) FROM telemetry"))  # holds its lock until the transaction ends

        done = maintain(engine, 1, NOW)

        assert done is not None
        assert "drop telemetry_p20260612" in done.skipped
        assert "telemetry_p20260612" in partitions(engine)
        store.write_batch([reading(NOW)])  # ingest is not held up
        reader.rollback()
    done = maintain(engine, 1, NOW)
    assert done is not None and "telemetry_p20260612" in done.dropped
    assert where(engine) == {"telemetry_p20260615": 1}


def test_values_written_while_their_day_is_attached_are_all_kept_once(engine: Engine) -> None:
    """The portal's writer goes on storing a day's values while a round moves that day out of the
    default partition; the ones that raced the attach are retried, none is lost or doubled."""
    maintain(engine, 30, NOW)
    buffer = ReadingBuffer(100_000)
    writer = BatchWriter(Store(engine), buffer, lambda _values: None, batch_max=200, linger_s=0.005)
    writer.start()
    per_day = 6_000
    try:
        for index, back in enumerate((2, 3, 4)):
            day = NOW.replace(hour=0) - back * DAY
            for n in range(per_day):
                buffer.put(reading(day + timedelta(seconds=n * 7), float(n)))
            # some of the day's values are in the default partition, the rest still coming
            wait_for(
                "the day's first values", partial(stored_at_least, writer, index * per_day + per_day // 4)
            )
            done = maintain(engine, 30, NOW)
            assert done is not None and f"telemetry_p{day:%Y%m%d}" in done.created, done
        wait_for("every value stored", lambda: writer.stored == 3 * per_day, seconds=60)
    finally:
        writer.stop()

    counts = where(engine)
    for back in (2, 3, 4):
        assert counts.get(f"telemetry_p{NOW - back * DAY:%Y%m%d}") == per_day, counts
    assert "telemetry_default" not in counts
    with engine.connect() as connection:
        distinct = connection.execute(text("SELECT count(DISTINCT ts) FROM telemetry")).scalar()
    assert distinct == 3 * per_day


def test_queries_during_a_move_see_every_value_once(engine: Engine) -> None:
    """A query running while a day's values move out of the default partition sees all of them:
    before the move or after it, never in between."""
    maintain(engine, 30, NOW)
    day = datetime(2026, 6, 10, tzinfo=UTC)
    Store(engine).write_batch([reading(day + timedelta(seconds=n), float(n)) for n in range(20_000)])
    seen: list[int] = []
    stop = threading.Event()

    def query() -> None:
        with engine.connect() as connection:
            while not stop.is_set():
                count = connection.execute(
                    text("SELECT count(*) FROM telemetry WHERE ts >= :day AND ts < :end"),
                    {"day": day, "end": day + DAY},
                ).scalar()
                connection.commit()
                seen.append(int(count or 0))

    readers = [threading.Thread(target=query) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        wait_for("the readers", lambda: len(seen) > 20)
        done = maintain(engine, 30, NOW)
        before = len(seen)
        wait_for("reads after the move", lambda: len(seen) > before + 20)
    finally:
        stop.set()
        for reader in readers:
            reader.join(10)
    assert done is not None and "telemetry_p20260610" in done.created
    assert set(seen) == {20_000}


def stored_at_least(writer: BatchWriter, count: int) -> bool:
    return writer.stored >= count


def alembic(database: RunningLab, *args: str) -> None:
    service = database.lab.service("web")
    subprocess.run(
        [
            str(service.lab.venv / "bin" / "alembic"),
            "-c",
            str(service.lab.root / "db" / "alembic.ini"),
            *args,
        ],
        cwd=service.lab.root,
        env=service.lab.service_env(),
        check=True,
        capture_output=True,
    )


def test_the_migration_keeps_every_row_and_its_downgrade_too(database: RunningLab, engine: Engine) -> None:
    maintain(engine, 30, NOW)
    values = [reading(NOW - timedelta(minutes=m), float(m)) for m in range(5000)]
    Store(engine).write_batch(values)
    query = "SELECT count(*), sum(value_num) FROM readings"
    with engine.connect() as connection:
        before = connection.execute(text(query)).one()
        rollups = connection.execute(text("SELECT count(*), sum(n) FROM telemetry_1m")).one()

    try:
        alembic(database, "downgrade", "0007")
        with engine.connect() as connection:
            assert connection.execute(text(query)).one() == before
            assert connection.execute(text("SELECT count(*), sum(n) FROM telemetry_1m")).one() == rollups
            kind = connection.execute(
                text("SELECT relkind FROM pg_class WHERE relname = 'telemetry'")
            ).scalar()
        assert kind == "r", "a plain table again"
    finally:
        alembic(database, "upgrade", "head")

    assert partitions(engine) == ["telemetry_default"], "the old table became the default partition"
    assert where(engine) == {"telemetry_default": 5000}
    with engine.connect() as connection:
        assert connection.execute(text(query)).one() == before
    done = maintain(engine, 30, NOW)
    assert done is not None
    assert sum(where(engine).values()) == 5000
    assert "telemetry_default" not in where(engine), "every row moved to its day"


def test_the_portal_keeps_retention_days_on_its_own(new_lab_config: Callable[..., LabConfig]) -> None:
    """RETENTION_DAYS=2: the portal's first round, soon after it starts, drops what is older."""
    now = datetime.now(UTC)
    with own_lab(new_lab_config, "retention-portal", ("db", "mosquitto"), RETENTION_DAYS="2") as running:
        cast(PortalService, running.lab.service("web")).migrate()
        engine = lab_engine(running)
        try:
            Store(engine).write_batch(
                [reading(now - 5 * DAY), reading(now - DAY, 2.0), reading(now - 400 * DAY)]
            )
            assert where(engine) == {"telemetry_default": 3}

            running.lab.start("web")
            token = api_token(running)

            def retention_metrics() -> dict[str, float] | None:
                """The portal's retention metrics once it has finished a round."""
                body = requests.get(
                    f"{running.portal_url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
                ).text
                values = dict(
                    line.split(" ") for line in body.splitlines() if line.startswith("portal_retention")
                )
                numbers = {name: float(value) for name, value in values.items()}
                return numbers if numbers["portal_retention_last_round_timestamp_seconds"] > 0 else None

            metrics = wait_for("the portal's first round", retention_metrics, seconds=30)
            assert metrics["portal_retention_deleted_rows_total"] == 4, "two old values and their rollups"
            assert where(engine) == {f"telemetry_p{now - DAY:%Y%m%d}": 1}

            # values keep flowing into the day partitions the round made ahead
            publish_as(running, "LAB_FLEET", [("office/r/d/t", '{"value": 3.5}')])
            wait_for("today's value", lambda: where(engine).get(f"telemetry_p{now:%Y%m%d}") == 1)
            answer = requests.get(
                f"{running.portal_url}/api/history",
                params={
                    "room": "r",
                    "device": "d",
                    "attr": "t",
                    "from": str(int((now - 3 * DAY).timestamp() * 1000)),
                },
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            assert [point["value"] for point in answer.json()["points"]] == [2.0, 3.5]
        finally:
            engine.dispose()
