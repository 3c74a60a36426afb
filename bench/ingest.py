"""Ingest benchmark: QoS 1 messages per second from the broker into PostgreSQL, with zero loss.

Two subscribers are measured in one run, on the same broker and database:

* **baseline**: the naive design the portal replaces, a paho subscriber that INSERTs and commits
  each message (on its own topic root, so the portal never sees those messages);
* **portal**: the lab's portal (batched COPY, acknowledgement after commit).

For each, ``mosquitto_pub -l -q 1`` processes publish numbered messages (one per line, one topic
per device, several processes at a time, as the broker's admin) as fast as the broker takes them,
while the benchmark counts the rows in ``telemetry`` until every message the broker accepted is
there. It prints the sustained rate (rows between 10 % and 90 % of the total, over the time that
took), the end-to-end rate, the loss (numbers missing from the database: must be zero), the
duplicates, where the CPU went, and the ratio of the two rates.

With ``--replicas 1,2`` the portal is measured once per replica count, each in a lab of its own
(with 2: Redis, two portal replicas sharing the broker's messages through a shared subscription,
and the front), the baseline once, in the first; a table at the end compares the counts.

Usage::

    .venv/bin/python bench/ingest.py                    # a lab of its own on free ports
    .venv/bin/python bench/ingest.py --replicas 1,2     # one portal, then two replicas
    .venv/bin/python bench/ingest.py --env-file .env    # a running lab (db, broker, portal)
    .venv/bin/python bench/ingest.py --profile 8        # also py-spy each portal process for 8 s
    .venv/bin/python bench/ingest.py --set INGEST_BATCH_MAX=1000

Figures are noisy on a shared machine: run it more than once. Exit status 1 if anything was lost.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlab import lab_instance, portal_services, replica_counts  # noqa: E402 - bench/ is on sys.path
from profiling import (  # noqa: E402
    cpu_usage,
    lab_processes,
    portal_workers,
    print_cpu,
    start_profile,
    summarize_profile,
)

from labctl.config import LabConfig  # noqa: E402

#: Seconds without a new row before the benchmark stops waiting for the rest.
STALL_S = 30.0
POLL_S = 0.2
#: QoS 1 messages each mosquitto_pub keeps in flight (its default, 20, makes it latency-bound).
PUBLISHER_INFLIGHT = 1000


@dataclass(frozen=True)
class Workload:
    """What one subscriber is measured with."""

    name: str
    root: str
    room: str
    messages: int
    devices: int
    publishers: int


@dataclass(frozen=True)
class Result:
    """What one subscriber achieved."""

    name: str
    published: int
    accepted: int
    stored_distinct: int
    stored_rows: int
    publish_s: float
    sustained_per_s: float
    end_to_end_per_s: float

    @property
    def lost(self) -> int:
        """Messages the broker accepted that are not in the database."""
        return self.accepted - self.stored_distinct

    def lines(self) -> list[str]:
        """Human-readable figures."""
        publish_rate = self.accepted / max(self.publish_s, 1e-9)
        return [
            f"{self.name}:",
            f"  published {self.published}, accepted by the broker {self.accepted}"
            f" (publishers took {self.publish_s:.1f}s: {publish_rate:,.0f} msg/s)",
            f"  stored {self.stored_distinct} distinct, {self.stored_rows - self.stored_distinct}"
            f" duplicates, lost {self.lost}",
            f"  sustained into PostgreSQL: {self.sustained_per_s:,.0f} msg/s"
            f" (end to end {self.end_to_end_per_s:,.0f} msg/s)",
        ]


# -- the lab ------------------------------------------------------------------------------


def connect_db(config: LabConfig) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to the lab's database."""
    return psycopg.connect(
        host="127.0.0.1",
        port=config.port("POSTGRES_PORT"),
        user="lab",
        dbname="lab",
        password=config.env["POSTGRES_PASSWORD"],
        autocommit=True,
    )


def one_row(
    connection: psycopg.Connection[tuple[object, ...]],
    sql: str,
    params: tuple[object, ...] | dict[str, object],
) -> tuple[int, ...]:
    """The first row of a query whose columns are integers."""
    row = connection.execute(sql, params).fetchone()
    if row is None:
        raise RuntimeError(f"no row from {sql!r}")
    return tuple(int(value) for value in row)  # type: ignore[call-overload]


# -- publishing ---------------------------------------------------------------------------


def publish_all(config: LabConfig, workload: Workload, workdir: Path) -> tuple[int, float]:
    """Publish the workload's numbered lines, one ``mosquitto_pub -l -q 1`` per device topic.

    Returns:
        How many messages the broker acknowledged (all lines of publishers that exited with 0),
        and how long publishing took.
    """
    per_device = max(1, workload.messages // workload.devices)
    pending = []
    for index in range(workload.devices):
        path = workdir / f"{workload.room}-{index}.txt"
        first = index * per_device
        path.write_text("".join(f"{n}\n" for n in range(first, first + per_device)))
        pending.append((f"{workload.root}/{workload.room}/dev{index:04d}/seq", path))
    env = config.env
    accepted = 0
    lock = threading.Lock()
    started = time.monotonic()

    def worker() -> None:
        nonlocal accepted
        while True:
            with lock:
                if not pending:
                    return
                topic, path = pending.pop()
            with path.open("rb") as lines:
                done = subprocess.run(
                    [
                        "mosquitto_pub",
                        *("-h", "127.0.0.1", "-p", str(config.port("MQTT_PORT"))),
                        *("-u", env["MQTT_ADMIN_USER"], "-P", env["MQTT_ADMIN_PASSWORD"]),
                        *("-i", f"bench-pub-{uuid.uuid4().hex[:10]}", "-M", str(PUBLISHER_INFLIGHT)),
                        *("-q", "1", "-t", topic, "-l"),
                    ],
                    stdin=lines,
                    capture_output=True,
                    check=False,
                )
            if done.returncode == 0:
                with lock:
                    accepted += per_device
            else:
                print(f"  publisher for {topic} failed: {done.stderr.decode(errors='replace').strip()}")

    threads = [threading.Thread(target=worker) for _ in range(workload.publishers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return accepted, time.monotonic() - started


# -- counting rows ------------------------------------------------------------------------

_COUNT_ROOM = """
SELECT count(*) FROM telemetry t
JOIN attributes a ON a.id = t.attribute_id JOIN devices d ON d.id = a.device_id
JOIN rooms r ON r.id = d.room_id WHERE r.name = %s
"""


class RowCounter:
    """Polls the number of telemetry rows of one room and remembers when each count was seen."""

    def __init__(self, config: LabConfig, room: str) -> None:
        self.config = config
        self.room = room
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with connect_db(self.config) as connection:
            while not self._stop.is_set():
                self.samples.append((time.monotonic(), one_row(connection, _COUNT_ROOM, (self.room,))[0]))
                self._stop.wait(POLL_S)

    def start(self) -> None:
        """Start polling."""
        self._thread.start()

    def wait_for(self, target: int) -> None:
        """Return once ``target`` rows are there, or nothing changed for :data:`STALL_S` seconds."""
        last_change, last = time.monotonic(), -1
        while True:
            time.sleep(POLL_S)
            current = self.samples[-1][1] if self.samples else 0
            if current >= target:
                return
            if current != last:
                last, last_change = current, time.monotonic()
            elif time.monotonic() - last_change > STALL_S:
                return

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        self._thread.join()

    def rates(self, started: float, total: int) -> tuple[float, float]:
        """(rate between 10 % and 90 % of ``total``, rate from ``started`` to the last row)."""
        low, high = total * 0.1, total * 0.9
        t_low = next((t for t, rows in self.samples if rows >= low), None)
        t_high = next((t for t, rows in self.samples if rows >= high), None)
        sustained = (high - low) / (t_high - t_low) if t_low and t_high and t_high > t_low else 0.0
        t_end = next((t for t, rows in self.samples if rows >= total), self.samples[-1][0])
        return sustained, total / max(t_end - started, 1e-9)


def measure(config: LabConfig, workload: Workload, workdir: Path) -> Result:
    """Publish the workload and measure its arrival in the database."""
    counter = RowCounter(config, workload.room)
    counter.start()
    started = time.monotonic()
    accepted, publish_s = publish_all(config, workload, workdir)
    counter.wait_for(accepted)
    counter.stop()
    sustained, end_to_end = counter.rates(started, accepted)
    with connect_db(config) as connection:
        distinct, rows = one_row(
            connection,
            "SELECT count(DISTINCT (device, value_num)), count(*) FROM readings WHERE room = %s",
            (workload.room,),
        )
    published = max(1, workload.messages // workload.devices) * workload.devices
    return Result(workload.name, published, accepted, distinct, rows, publish_s, sustained, end_to_end)


# -- the baseline -------------------------------------------------------------------------

_REGISTER = """
WITH r AS (INSERT INTO rooms (name) VALUES (%(room)s)
           ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id),
     d AS (INSERT INTO devices (room_id, name) SELECT id, %(device)s FROM r
           ON CONFLICT (room_id, name) DO UPDATE SET name = excluded.name RETURNING id)
INSERT INTO attributes (device_id, name) SELECT id, %(attr)s FROM d
ON CONFLICT (device_id, name) DO UPDATE SET name = excluded.name RETURNING id
"""


class NaiveSubscriber:
    """The baseline: subscribe, and for each message INSERT one row and commit."""

    def __init__(self, config: LabConfig, root: str) -> None:
        self.config = config
        self.root = root
        self.db = connect_db(config)
        self.ids: dict[str, int] = {}
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-naive-{uuid.uuid4().hex[:8]}", clean_session=True
        )
        self.client.username_pw_set(config.env["MQTT_ADMIN_USER"], config.env["MQTT_ADMIN_PASSWORD"])
        self.client.on_message = self.on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *_args: self.subscribed.set()

    def on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        _root, room, device, attr = message.topic.split("/")
        key = f"{room}/{device}/{attr}"
        if key not in self.ids:
            self.ids[key] = one_row(self.db, _REGISTER, {"room": room, "device": device, "attr": attr})[0]
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO telemetry (ts, attribute_id, value_num) VALUES (now(), %s, %s)",
                (self.ids[key], float(message.payload)),
            )

    def __enter__(self) -> NaiveSubscriber:
        self.client.connect("127.0.0.1", self.config.port("MQTT_PORT"))
        self.client.loop_start()
        self.client.subscribe(f"{self.root}/#", qos=1)
        if not self.subscribed.wait(10):
            raise RuntimeError("baseline subscriber: no SUBACK")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.db.close()


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env-file", type=Path, help="measure this running lab instead of starting one")
    parser.add_argument(
        "--replicas",
        type=replica_counts,
        metavar="LIST",
        help="portal replica counts, each measured in a lab of its own, e.g. 1,2 (default 1; "
        "not with --env-file, which measures the lab's own PORTAL_REPLICAS)",
    )
    parser.add_argument("--messages", type=int, default=300_000, help="messages through the portal")
    parser.add_argument("--baseline-messages", type=int, default=10_000, help="messages through the baseline")
    parser.add_argument("--devices", type=int, default=32, help="topics (one per device) to spread them over")
    parser.add_argument("--publishers", type=int, default=4, help="mosquitto_pub processes at a time")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="SECONDS", help="py-spy each portal process"
    )
    parser.add_argument("--keep", action="store_true", help="keep the started labs' folders (logs)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="VAR=VALUE",
        help="a setting of the labs started here, e.g. INGEST_BATCH_MAX=1000 (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.env_file is not None and args.replicas is not None:
        parser.error(
            "--replicas starts labs of its own; with --env-file the lab's PORTAL_REPLICAS is measured"
        )
    if any(not item.partition("=")[1] for item in args.set):
        parser.error("--set takes VAR=VALUE")
    if any(item.startswith("PORTAL_REPLICAS=") for item in args.set):
        parser.error("the replica count is --replicas, not --set PORTAL_REPLICAS")
    return args


def measure_baseline(args: argparse.Namespace, config: LabConfig, run_id: str, workdir: Path) -> Result:
    """The naive subscriber, on a topic root of its own beside the portal's."""
    naive_root = f"bench-naive-{run_id}"
    with NaiveSubscriber(config, naive_root):
        naive = measure(
            config,
            Workload(
                "baseline (paho, INSERT + commit per message)",
                naive_root,
                f"naive-{run_id}",
                args.baseline_messages,
                args.devices,
                args.publishers,
            ),
            workdir,
        )
    print("\n".join(naive.lines()))
    return naive


def measure_portal(args: argparse.Namespace, config: LabConfig, run_id: str, workdir: Path) -> Result:
    """The lab's portal (every replica of it), with the CPU of each program and its profile."""
    workers = portal_workers(config)
    profiles = {name: workdir / f"profile-{name}.txt" for name in workers} if args.profile else {}
    spies = [start_profile(workers[name], args.profile, out) for name, out in profiles.items()]
    cpu: dict[str, float] = {}
    replicas = f"{config.replicas} replicas" if config.replicas > 1 else "one process"
    with cpu_usage(cpu, exited="mosquitto_pub (exited)", named=lab_processes(config)):
        portal = measure(
            config,
            Workload(
                f"portal (batched COPY, ack after commit; {replicas})",
                config.env.get("TOPIC_ROOT", "office"),
                f"bench-{run_id}",
                args.messages,
                args.devices,
                args.publishers,
            ),
            workdir,
        )
    print("\n".join(portal.lines()))
    print_cpu(cpu)
    for spy in spies:
        if spy is not None:
            spy.wait()
    for name, out in profiles.items():
        if out.exists():
            print(f"portal {name} profile ({args.profile}s, share of samples holding the GIL):")
            print("\n".join(summarize_profile(out)))
    return portal


def print_comparison(naive: Result | None, runs: list[tuple[int, Result]]) -> None:
    """One line per replica count: rates, loss, duplicates, and the rate against one replica's."""
    one = next((portal.sustained_per_s for count, portal in runs if count == 1), 0.0)
    print()
    print("portal replicas side by side (msg/s into PostgreSQL)")
    print(
        f"  {'replicas':>8} {'sustained':>10} {'end to end':>11} {'lost':>6} {'duplicates':>11}"
        f"  {'sustained / 1 replica':>21}  {'/ baseline':>10}"
    )
    for count, portal in runs:
        to_one = f"{portal.sustained_per_s / one:.2f}x" if one else "-"
        to_naive = (
            f"{portal.sustained_per_s / naive.sustained_per_s:.1f}x"
            if naive and naive.sustained_per_s
            else "-"
        )
        print(
            f"  {count:8d} {portal.sustained_per_s:10,.0f} {portal.end_to_end_per_s:11,.0f} {portal.lost:6d}"
            f" {portal.stored_rows - portal.stored_distinct:11d}  {to_one:>21}  {to_naive:>10}"
        )


def measure_lab(
    args: argparse.Namespace,
    config: LabConfig,
    run_id: str,
    workdir: Path,
    naive: Result | None,
) -> tuple[Result, Result]:
    """One lab: the baseline (unless ``naive`` was measured in an earlier one), then the portal."""
    print(f"\n== {config.replicas} portal replica{'s' if config.replicas > 1 else ''} ==")
    print(f"lab: broker port {config.port('MQTT_PORT')}, database port {config.port('POSTGRES_PORT')}")
    print(f"machine: {os.cpu_count()} cores; {args.publishers} publishers at a time, {args.devices} topics")
    if naive is None:
        naive = measure_baseline(args, config, run_id, workdir)
    portal = measure_portal(args, config, run_id, workdir)
    if naive.sustained_per_s:
        print(f"ratio portal / baseline (sustained): {portal.sustained_per_s / naive.sustained_per_s:.1f}x")
    return naive, portal


def main(argv: list[str] | None = None) -> int:
    """Run the baseline, then the portal for each replica count; print them and their ratios."""
    args = parse_args(argv)
    if shutil.which("mosquitto_pub") is None:
        print("mosquitto_pub not found: apt-get install mosquitto-clients", file=sys.stderr)
        return 2
    overrides = dict(item.split("=", 1) for item in args.set)
    run_id = uuid.uuid4().hex[:6]
    # With --env-file, one run on that lab (count None: its own PORTAL_REPLICAS).
    counts: tuple[int | None, ...] = (None,) if args.env_file is not None else (args.replicas or (1,))
    naive: Result | None = None
    runs: list[tuple[int, Result]] = []
    with tempfile.TemporaryDirectory(prefix="bench-lines-") as tmp:
        for count in counts:
            services = None if count is None else ("db", "mosquitto", *portal_services(count))
            settings = overrides if count is None else {**overrides, "PORTAL_REPLICAS": str(count)}
            with lab_instance(
                args.env_file, "bench-ingest-", services=services, overrides=settings, keep=args.keep
            ) as (config, _lab):
                naive, portal = measure_lab(args, config, run_id, Path(tmp), naive)
                runs.append((config.replicas, portal))
    print_comparison(naive, runs)
    lost = sum(portal.lost for _count, portal in runs) + (naive.lost if naive else 0)
    if lost:
        print(f"lost {lost} messages the broker had accepted", file=sys.stderr)
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
