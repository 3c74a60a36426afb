"""Long-range history: a 7-day chart of a one-second attribute, from the per-minute rollups and from
every stored value, side by side.

One run, on this machine:

1. a lab instance (database, broker, portal; its own on free ports, or a running one with
   ``--env-file``);
2. ``--days`` days of one value a second for one attribute (604,800 for 7 days), written through
   the portal's own storage code (``Store.write_batch``, batches of 5,000, the rollups kept as the
   writer keeps them);
3. the device page's three requests for that range (``/api/history`` with ``agg`` avg, min and max,
   in buckets of an hour, as the page asks for 7 days), over HTTP, ``--repeat`` times each;
4. the same points computed in the portal's process both ways (``history(..., rollups=True)``
   and ``rollups=False``: every stored value aggregated by PostgreSQL), each checked equal to the
   other.

Target: the chart's requests answer in under 200 ms.

    .venv/bin/python bench/history.py --help

It prints figures; it passes or fails nothing.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlab import lab_instance  # noqa: E402 - bench/ is on sys.path when this runs as a script
from portal_probe import sign_in  # noqa: E402

from web.api.history import HistoryQuery, history  # noqa: E402
from web.messages import Reading  # noqa: E402
from web.settings import DatabaseSettings  # noqa: E402
from web.storage import Store, make_engine  # noqa: E402
from wire.topics import Topic  # noqa: E402

ROOM, DEVICE, ATTR = "bench-history", "sensor", "temperature"
BATCH = 5_000
BUCKET_S = 3600  # what the device page asks for a 7-day range (about 300 points)


def fill(store: Store, days: int, end: datetime) -> int:
    """One value a second for ``days`` days before ``end``; the number of values written."""
    total = days * 86_400
    start = end - timedelta(seconds=total)
    topic = Topic("office", ROOM, DEVICE, ATTR)
    written = 0
    began = time.perf_counter()
    for first in range(0, total, BATCH):
        batch = []
        for second in range(first, min(first + BATCH, total)):
            at = start + timedelta(seconds=second)
            batch.append(Reading(topic, round(20 + 5 * math.sin(second / 3600), 2), at, at))
        store.write_batch(batch)
        written += len(batch)
        if written % 100_000 < BATCH:
            print(
                f"  {written:,} of {total:,} values written ({time.perf_counter() - began:.0f} s)", flush=True
            )
    return written


def timed(action: object, repeat: int) -> list[float]:
    """Milliseconds of each of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        action()  # type: ignore[operator]
        times.append((time.perf_counter() - began) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-file", type=Path, help="measure the running lab of this .env")
    parser.add_argument("--days", type=int, default=7, help="days of one value a second (default 7)")
    parser.add_argument("--repeat", type=int, default=10, help="times each request is made (default 10)")
    parser.add_argument("--keep", action="store_true", help="keep the lab's folder")
    args = parser.parse_args()
    with lab_instance(
        args.env_file, "bench-history-", services=("db", "mosquitto", "web"), keep=args.keep
    ) as (
        config,
        _lab,
    ):
        settings = DatabaseSettings.from_env(
            _env_file=None,
            postgres_port=config.port("POSTGRES_PORT"),
            postgres_password=config.env["POSTGRES_PASSWORD"],
        )
        engine = make_engine(settings)
        store = Store(engine)
        end = datetime.now(UTC).replace(microsecond=0)
        print(f"writing {args.days} days of one value a second ...")
        written = fill(store, args.days, end)
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")  # as autovacuum would soon
        end_ms = int(end.timestamp() * 1000)
        start_ms = end_ms - args.days * 86_400_000
        session, _cookie = sign_in(config)
        url = f"http://127.0.0.1:{config.port('PORTAL_PORT')}/api/history"
        rows = []
        for agg in ("avg", "min", "max"):
            params = {
                "room": ROOM,
                "device": DEVICE,
                "attr": ATTR,
                "from": start_ms,
                "to": end_ms,
                "bucket": BUCKET_S,
                "agg": agg,
            }

            def over_http(params: dict[str, object] = params) -> None:
                answer = session.get(url, params=params, timeout=60)
                answer.raise_for_status()

            query = HistoryQuery(ROOM, DEVICE, ATTR, start_ms, end_ms, BUCKET_S, agg, 10_000)
            rolled = history(engine, query, rollups=True)
            raw = history(engine, query, rollups=False)
            agree = [p["ts"] for p in rolled[0]] == [p["ts"] for p in raw[0]] and all(
                math.isclose(a["value"], b["value"], rel_tol=1e-9)
                for a, b in zip(rolled[0], raw[0], strict=True)
            )
            rows.append(
                (
                    agg,
                    len(rolled[0]),
                    statistics.median(timed(over_http, args.repeat)),
                    statistics.median(timed(lambda q=query: history(engine, q, rollups=True), args.repeat)),
                    statistics.median(timed(lambda q=query: history(engine, q, rollups=False), args.repeat)),
                    agree,
                )
            )
        engine.dispose()
    print(f"\n{written:,} values of one attribute ({args.days} days, one a second), buckets of {BUCKET_S} s;")
    print(f"medians of {args.repeat} requests each:\n")
    print(
        "| agg | points | API over HTTP (rollups) | rollups, in process | every value, in process"
        " | every value / rollups | same points |"
    )
    print("|---|---|---|---|---|---|---|")
    for agg, points, http_ms, rolled_ms, raw_ms, agree in rows:
        print(
            f"| {agg} | {points} | {http_ms:.0f} ms | {rolled_ms:.0f} ms | {raw_ms:.0f} ms |"
            f" {raw_ms / rolled_ms:.0f}x | {'yes' if agree else 'NO'} |"
        )
    worst = max(http_ms for _agg, _points, http_ms, _r, _w, _a in rows)
    verdict = "PASS" if worst < 200 else "FAIL"
    print(f"\nthe chart's slowest request: {worst:.0f} ms (target: under 200 ms: {verdict})")


if __name__ == "__main__":
    main()
