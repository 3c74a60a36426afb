"""Retention: a day of ten million values dropped by the portal's retention round, beside ``DELETE``
of the same rows from a plain table, in one run.

One run, on this machine:

1. a lab instance (its database alone, migrated; its own on free ports);
2. ``--rows`` values (10,000,000) of one UTC day for 1,000 attributes, and a tenth as many of the
   next day, written into ``telemetry`` (its day partitions made by a round first), then copied
   into a plain table with the same columns, indexes and foreign key (the baseline: the table
   as it was before day partitions);
3. the retention round (``web.retention.maintain``) that drops the first day, timed, while a
   thread inserts one value every 10 ms into the kept day (what ingest goes on doing); then
   ``DELETE`` of the same day from the plain table, timed, with the same thread inserting into it;
4. both tables' sizes on disk before and after (a ``DELETE`` frees nothing until a ``VACUUM``,
   and then keeps the space for the table's reuse).

    .venv/bin/python bench/retention.py --help

It prints figures; it passes or fails nothing.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlab import lab_instance  # noqa: E402 - bench/ is on sys.path when this runs as a script
from sqlalchemy import Engine, text  # noqa: E402

from labctl.services import Portal  # noqa: E402
from web.retention import maintain, start_of  # noqa: E402
from web.settings import DatabaseSettings  # noqa: E402
from web.storage import make_engine  # noqa: E402

ATTRIBUTES = 1_000
#: The day dropped, and the day after it (kept).
DAY = datetime(2026, 1, 10, tzinfo=UTC).date()
PLAIN = "telemetry_plain"


def run(engine: Engine, statement: str, **params: object) -> int:
    with engine.begin() as connection:
        return connection.execute(text(statement), params).rowcount


def vacuum(engine: Engine, statement: str) -> None:
    """VACUUM runs outside a transaction."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(statement))


def size(engine: Engine, relations: list[str]) -> int:
    with engine.connect() as connection:
        return sum(
            int(
                connection.execute(
                    text("SELECT pg_total_relation_size(CAST(:r AS regclass))"), {"r": r}
                ).scalar()
                or 0
            )
            for r in relations
        )


def fill(engine: Engine, rows: int) -> None:
    """``rows`` values of DAY and a tenth as many of the next day, in both tables."""
    run(engine, "INSERT INTO rooms (name) VALUES ('bench-retention')")
    run(
        engine, "INSERT INTO devices (room_id, name) SELECT id, 'd' FROM rooms WHERE name = 'bench-retention'"
    )
    run(
        engine,
        "INSERT INTO attributes (device_id, name) "
        "SELECT d.id, 'a' || g FROM devices d, generate_series(1, :n) g",
        n=ATTRIBUTES,
    )
    for day, count in ((DAY, rows), (DAY + timedelta(days=1), rows // 10)):
        began = time.perf_counter()
        step_ms = 86_400_000 / count
        run(
            engine,
            "INSERT INTO telemetry (ts, attribute_id, value_num) "
            "SELECT CAST(:day AS timestamptz) + g * :step * interval '1 millisecond', "
            "       (SELECT min(id) FROM attributes) + g % :n, g % 1000 "
            "FROM generate_series(0, :count - 1) g",
            day=start_of(day),
            step=step_ms,
            n=ATTRIBUTES,
            count=count,
        )
        print(f"  {count:,} values of {day} in telemetry ({time.perf_counter() - began:.0f} s)", flush=True)
    began = time.perf_counter()
    run(engine, f"CREATE TABLE {PLAIN} (LIKE telemetry INCLUDING ALL)")
    run(
        engine,
        f"ALTER TABLE {PLAIN} ADD FOREIGN KEY (attribute_id) REFERENCES attributes (id) ON DELETE CASCADE",
    )
    run(engine, f"INSERT INTO {PLAIN} SELECT * FROM telemetry")  # noqa: S608
    vacuum(engine, f"VACUUM ANALYZE {PLAIN}")
    vacuum(engine, "VACUUM ANALYZE telemetry")
    print(f"  the same values copied into the plain table ({time.perf_counter() - began:.0f} s)", flush=True)


class Inserter(threading.Thread):
    """Inserts one value of the kept day every 10 ms into ``table``; keeps the longest wait."""

    def __init__(self, engine: Engine, table: str) -> None:
        super().__init__(daemon=True)
        self.engine, self.table = engine, table
        self.stop = threading.Event()
        self.longest_ms = 0.0
        self.count = 0

    def run(self) -> None:
        attribute = run_scalar(self.engine, "SELECT min(id) FROM attributes")
        at = start_of(DAY + timedelta(days=1)) + timedelta(hours=12)
        while not self.stop.wait(0.01):
            began = time.perf_counter()
            run(
                self.engine,
                f"INSERT INTO {self.table} (ts, attribute_id, value_num) VALUES (:at, :a, 1)",  # noqa: S608
                at=at + timedelta(milliseconds=self.count),
                a=attribute,
            )
            self.longest_ms = max(self.longest_ms, (time.perf_counter() - began) * 1000)
            self.count += 1


def run_scalar(engine: Engine, statement: str) -> object:
    with engine.connect() as connection:
        return connection.execute(text(statement)).scalar()


def timed_with_inserts(engine: Engine, table: str, action: object) -> tuple[float, object, Inserter]:
    inserter = Inserter(engine, table)
    inserter.start()
    time.sleep(0.5)
    began = time.perf_counter()
    result = action()  # type: ignore[operator]
    elapsed = time.perf_counter() - began
    time.sleep(0.5)
    inserter.stop.set()
    inserter.join()
    return elapsed, result, inserter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", type=int, default=10_000_000, help="values of the dropped day (default 10,000,000)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the lab's folder")
    args = parser.parse_args()
    with lab_instance(None, "bench-retention-", services=("db",), keep=args.keep) as (config, lab):
        if lab is None:
            raise SystemExit("no lab instance")
        cast(Portal, lab.service("web")).migrate()
        engine = make_engine(
            DatabaseSettings.from_env(
                _env_file=None,
                postgres_port=config.port("POSTGRES_PORT"),
                postgres_password=config.env["POSTGRES_PASSWORD"],
            )
        )
        maintain(engine, 0, start_of(DAY))  # the day partitions, as a portal running then made them
        print(
            f"writing {args.rows:,} values of {DAY} and {args.rows // 10:,} of the next day ...", flush=True
        )
        fill(engine, args.rows)

        dropped = f"telemetry_p{DAY:%Y%m%d}"
        kept = f"telemetry_p{DAY + timedelta(days=1):%Y%m%d}"
        partitioned_before = size(engine, [dropped, kept])
        plain_before = size(engine, [PLAIN])
        # two days of retention, a day and a half after the dropped day ended: that day goes
        now = start_of(DAY + timedelta(days=3)) + timedelta(hours=12)
        drop_s, done, drop_inserts = timed_with_inserts(engine, kept, lambda: maintain(engine, 2, now))
        if done is None or dropped not in done.dropped:  # type: ignore[attr-defined]
            raise SystemExit(f"the round did not drop {dropped}: {done}")
        partitioned_after = size(engine, [kept])
        cutoff = start_of(DAY + timedelta(days=1))
        delete_s, deleted, delete_inserts = timed_with_inserts(
            engine,
            PLAIN,
            lambda: run(engine, f"DELETE FROM {PLAIN} WHERE ts < :cutoff", cutoff=cutoff),  # noqa: S608
        )
        plain_after = size(engine, [PLAIN])
        began = time.perf_counter()
        vacuum(engine, f"VACUUM {PLAIN}")
        vacuum_s = time.perf_counter() - began
        plain_vacuumed = size(engine, [PLAIN])
        engine.dispose()

    mib = 1024 * 1024
    print()
    print(f"dropping one day of {args.rows:,} values (and the next day's {args.rows // 10:,} kept):")
    print("| | retention round (day partitions) | DELETE (plain table) | ratio |")
    print("|---|---|---|---|")
    ratio = delete_s / drop_s
    print(
        f"| time | {drop_s * 1000:,.0f} ms | {delete_s * 1000:,.0f} ms ({deleted:,} rows) | {ratio:,.0f}x |"
    )
    print(
        f"| longest insert meanwhile (one every 10 ms) | {drop_inserts.longest_ms:,.0f} ms | "
        f"{delete_inserts.longest_ms:,.0f} ms | |"
    )
    print(
        f"| size on disk before, after | {partitioned_before / mib:,.0f} MiB, "
        f"{partitioned_after / mib:,.0f} MiB | "
        f"{plain_before / mib:,.0f} MiB, {plain_after / mib:,.0f} MiB | |"
    )
    print(
        f"| VACUUM after the DELETE | - | {vacuum_s * 1000:,.0f} ms, then {plain_vacuumed / mib:,.0f} MiB | |"
    )


if __name__ == "__main__":
    main()
