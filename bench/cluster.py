"""Fleets over Dask workers: ``stress run --cluster local:2`` beside ``--processes 2``, in one run.

The same fleet, split over two local processes (the baseline) and over a local Dask cluster of
two workers (one thread each), run one after the other against one private Mosquitto on
loopback (``plain_broker.py``), several times each, alternated (the first of each pair takes
turns, so a drift of the machine during the run weighs on both); the table holds the medians,
with the range of the runs beside them. Every run is the engine of ``fleet.py`` with its
messages (``--behaviour thermostat --topic bench/{device}/{attr} --payload {value}``: three
messages per device per instant) and one of the two flags added.

Scenarios (``--scenario``, default all):

* ``qos0``: 10,000 devices at QoS 0 in capacity mode (``--interval 0``, as ``fleet.py``'s qos0
  row), msg/s counted by the broker and by the run's own ``summary.json`` (``msgs_per_s``: at QoS
  0 the messages written to the sockets, which the kernel buffers ahead of the broker);
  target: the cluster within 5 % of the processes (at least 0.95 of their rate);
* ``qos1``: 1,000 devices at QoS 1 in capacity mode; the broker's count and the summary's acked
  per second; target: within 10 %;
* ``lateness``: 10,000 devices at QoS 0 at a steady rate (``--lateness-rate``, 60,000 msg/s by
  default: each device every 0.5 s), and how late the messages left (``latency_ms.lateness``
  of summary.json; capacity mode has no schedule to be late on); target: the cluster's p99 at
  most 5 ms above the processes';
* ``ceiling``: what one worker reaches: ``--cluster local:1`` then ``local:2``, 5,000 devices at
  QoS 0 in capacity mode; the broker's count, and each worker's own count of messages written,
  CPU, loop lag and saturated seconds (``cluster.workers`` of summary.json): msg/s per core of a
  worker, the figure to size a cluster with;
* ``merge``: what the parent spends per worker per second, without a broker: N workers' seconds
  (synthetic, shaped like a QoS 1 run's: a few hundred histogram buckets each), pickled as they
  travel, then decoded (``Second.from_wire``) and merged (``merge_by_second``) in this process,
  timed for N = 2, 8, 32 and 128; the cluster's parent decodes each second once (the merge and
  the per-worker breakdown read the same decoded second), so its cost is a decode and the merge.

**Counting.** As in ``fleet.py`` (its ``BrokerCounters`` and ``Bench``): the broker's
``$SYS/broker/publish/messages/received`` over the steady window, from 2 s after the broker
counts the whole fleet connected to 2 s before the end of publishing, so the Dask cluster's own
start (a few seconds) is outside it. The CPU of the parent alone (the ``stress run`` process,
which merges every second and, for ``local:N``, hosts the Dask scheduler) is sampled from
``/proc`` every 0.2 s and given over the same window, as a share of one core.

**A quiet start.** Before each run the benchmark waits (at most 90 s) until the machine's
busy CPU, from ``/proc/stat`` over 2 s, is at most 30 % of a core: the broker has drained the
previous run (at QoS 0 in capacity mode the engine writes into the kernel's socket buffers
far ahead of the broker, which goes on reading them for tens of seconds after the run), and
other programs are not busy. What other programs used over each steady window (the machine's
busy CPU less the run's process tree and the broker) is printed beside each run and in the
table: a run that shared the machine shows it.

This machine's cores are shared by the broker and the generator, whichever the mode: the
figures compare the modes here; they are not the broker's or the engine's maximum.

Usage::

    .venv/bin/python bench/cluster.py                    # everything, 3 runs each (30-60 min)
    .venv/bin/python bench/cluster.py --quick            # a smaller, shorter smoke run (a few min)
    .venv/bin/python bench/cluster.py --scenario qos0,merge --repeats 5

It prints PASS or FAIL beside each target; the exit status says only whether it could measure
(0), not whether the targets were met.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# bench/ is on sys.path when this runs as a script
from fleet import (  # noqa: E402
    CLK_TCK,
    POLL_S,
    SKIP_HEAD_S,
    SKIP_TAIL_S,
    SYS_PERIOD_S,
    TICK_SLACK_S,
    Bench,
    BrokerCounters,
    Load,
    Outcome,
    count,
    cpu_seconds,
    engine_messages_per_instant,
)
from plain_broker import PlainBroker  # noqa: E402

from stress.measure.meter import Second  # noqa: E402
from stress.results.summary import merge_by_second  # noqa: E402

SCENARIOS = ("qos0", "qos1", "lateness", "ceiling", "merge")
#: The two modes compared: the baseline first.
PROCESSES = "processes 2"
CLUSTER = "cluster local:2"
MODES: dict[str, tuple[str, ...]] = {
    PROCESSES: ("--processes", "2"),
    CLUSTER: ("--cluster", "local:2"),
}
#: The ceiling scenario's modes.
CEILING: dict[str, tuple[str, ...]] = {
    "local:1": ("--cluster", "local:1"),
    "local:2": ("--cluster", "local:2"),
}
#: Before each run, wait (at most this long) until the other programs of the machine use at
#: most this share of a core, measured over this span.
QUIET_CPU = 30.0
QUIET_PATIENCE_S = 90.0
QUIET_SPAN_S = 2.0
#: Samples of :class:`Watch` kept: the last ten minutes.
WATCH_KEPT = 3_000
#: Worker counts the merge is timed with.
MERGE_WORKERS = (2, 8, 32, 128)
CONNECT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Plan:
    """How big and how long: the full benchmark, or ``--quick``."""

    repeats: int
    duration: float
    qos0_devices: int
    qos1_devices: int
    lateness_devices: int
    lateness_rate: float
    ceiling_devices: int
    #: Seconds merged for each worker count of the ``merge`` scenario.
    merge_seconds: int


FULL = Plan(3, 20.0, 10_000, 1_000, 10_000, 60_000.0, 5_000, 200)
QUICK = Plan(1, 8.0, 2_000, 200, 2_000, 12_000.0, 1_000, 20)


# -- what the parent and the rest of the machine use --------------------------------------


def machine_busy_s() -> float:
    """CPU seconds the machine's cores have been busy (neither idle nor waiting for I/O) since boot."""
    with Path("/proc/stat").open() as stat:
        fields = [int(value) for value in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def wait_quiet() -> tuple[float, float]:
    """Wait until the other programs of the machine use at most :data:`QUIET_CPU` % of a core (over
    2 s), or :data:`QUIET_PATIENCE_S` has passed; the last share measured and the seconds waited."""
    began = time.monotonic()
    while True:
        before = machine_busy_s()
        time.sleep(QUIET_SPAN_S)
        share = 100 * (machine_busy_s() - before) / QUIET_SPAN_S
        waited = time.monotonic() - began
        if share <= QUIET_CPU or waited >= QUIET_PATIENCE_S:
            return share, waited


class Watch:
    """Samples, every :data:`POLL_S`, the CPU seconds of the run's top process alone (not its
    workers: the ``stress run`` parent, which receives and merges every second) and of the whole
    machine (what other programs use is the machine's less this benchmark's)."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        #: (time, pid of the run, its CPU seconds; the machine's busy CPU seconds)
        self.samples: deque[tuple[float, int, float, float]] = deque(maxlen=WATCH_KEPT)
        self.last_pid = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-cluster-watch", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            current = self.bench.current
            pid = current.pid if current is not None else 0
            # /proc only: polling the process here would reap it under fleet.Bench's wait4
            parent = cpu_seconds(pid) if pid else 0.0
            self.samples.append((time.monotonic(), pid, parent, machine_busy_s()))
            if pid:
                self.last_pid = pid

    def _share(self, index: int, start: float, end: float, pid: int | None) -> float | None:
        samples = [sample for sample in self.samples if pid is None or sample[1] == pid]
        before = [sample[index] for sample in samples if sample[0] <= start]
        upto = [sample[index] for sample in samples if sample[0] <= end]
        if not before or not upto or end <= start:
            return None
        return 100.0 * (upto[-1] - before[-1]) / (end - start)

    def parent(self, start: float, end: float) -> float | None:
        """The last run's parent's CPU between two moments, as a percentage of one core."""
        return self._share(2, start, end, self.last_pid)

    def machine(self, start: float, end: float) -> float | None:
        """The machine's busy CPU between two moments, as a percentage of one core."""
        return self._share(3, start, end, None)

    def close(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join()


# -- one run of the engine -----------------------------------------------------------------


@dataclass
class Sample:
    """One run of one mode: the broker's view (``outcome``), and what the run's parent and the
    machine's other programs used over the steady window (% of a core)."""

    mode: str
    outcome: Outcome
    parent_cpu: float | None = None
    others_cpu: float | None = None
    #: What other programs used just before the run started.
    others_before: float | None = None

    @property
    def report(self) -> dict[str, Any]:
        """The run's summary.json (empty when it wrote none)."""
        return self.outcome.report

    @property
    def broker_rate(self) -> float | None:
        """msg/s counted by the broker over the steady window."""
        return self.outcome.rate

    @property
    def summary_rate(self) -> float | None:
        """msg/s by the run's own count: acked at QoS 1, written at QoS 0."""
        value = self.report.get("msgs_per_s")
        return None if value is None else float(value)

    def lateness(self, key: str) -> float | None:
        """A lateness percentile (``p50``, ``p99``, ``max``) in ms."""
        value = ((self.report.get("latency_ms") or {}).get("lateness") or {}).get(key)
        return None if value is None else float(value)

    @property
    def workers(self) -> list[dict[str, Any]]:
        """``cluster.workers`` of the summary (empty for ``--processes``)."""
        return list((self.report.get("cluster") or {}).get("workers") or [])

    @property
    def worker_cpu(self) -> float | None:
        """CPU of the engines (the workers, summed) by their own count, as a percentage of one core."""
        if self.workers:
            return sum(float(worker["cpu_percent"]) for worker in self.workers)
        value = (self.report.get("generator") or {}).get("cpu_percent")
        return None if value is None else float(value)

    @property
    def per_core(self) -> float | None:
        """msg/s per core of the engines' CPU, by their own count (written at QoS 0, acked at
        QoS 1): what a core of workers generates."""
        if not self.summary_rate or not self.worker_cpu:
            return None
        return self.summary_rate / (self.worker_cpu / 100)


def window(bench: Bench, outcome: Outcome) -> tuple[float, float] | None:
    """The steady window's first and last $SYS ticks (monotonic), as ``fleet.Bench`` took them."""
    if outcome.up_at is None or outcome.rate is None:
        return None
    earliest = outcome.up_at + SKIP_HEAD_S - TICK_SLACK_S
    first = next((tick for tick in bench.counters.ticks if tick >= earliest), None)
    return None if first is None else (first, first + outcome.window_s)


def run_once(bench: Bench, watch: Watch, mode: str, flags: tuple[str, ...], load: Load) -> Sample:
    """One run of the engine with ``flags`` once the machine is quiet, measured; a line (and one
    per worker) printed."""
    others_before, waited = wait_quiet()
    outcome = bench.run("engine", replace(load, engine_flags=flags))
    sample = Sample(mode, outcome, others_before=others_before)
    span = window(bench, outcome)
    if span is not None:
        sample.parent_cpu = watch.parent(*span)
        machine = watch.machine(*span)
        if machine is not None:
            sample.others_cpu = max(0.0, machine - outcome.cpu_window - outcome.broker_window)
    print(f"  {mode}: {describe(sample)}", flush=True)
    if others_before > QUIET_CPU:
        print(f"    the machine was not quiet: other programs used {others_before:.0f} % after {waited:.0f}s")
    for note in outcome.notes:
        print(f"    {note}")
    if outcome.skipped is not None:
        print(f"    skipped: {outcome.skipped}")
    for worker in sample.workers:
        print(
            f"    worker {worker['address']}: {worker['devices']:,} devices,"
            f" {count(worker['msgs_per_s'])} msg/s by its count, CPU {worker['cpu_percent']:.0f} %,"
            f" loop lag p99 {worker['loop_lag_p99_ms']} ms,"
            f" saturated {worker['saturated_seconds']} of {worker['run_seconds']} s"
        )
    return sample


def describe(sample: Sample) -> str:
    """What one run measured, in a line (CPU as % of one core)."""
    report = sample.report
    parts = [
        f"broker {count(sample.broker_rate)} msg/s",
        f"summary {count(sample.summary_rate)} msg/s",
    ]
    if sample.lateness("p99") is not None:
        parts.append(f"lateness p50 {sample.lateness('p50')} / p99 {sample.lateness('p99')} ms")
    parts.append(
        f"CPU: engines {_pct(sample.worker_cpu)}, parent {_pct(sample.parent_cpu, 1)},"
        f" all of the run {sample.outcome.cpu_window:.0f} %, broker {sample.outcome.broker_window:.0f} %,"
        f" other programs {_pct(sample.others_cpu)}"
    )
    if report.get("failed"):
        parts.append(f"failed {report['failed']:,} {report.get('errors_by_reason')}")
    if report.get("stopped") not in (None, "completed"):
        parts.append(f"stopped: {report.get('stopped')}")
    return ", ".join(parts)


def _pct(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f} %"


def alternate(
    bench: Bench, watch: Watch, modes: dict[str, tuple[str, ...]], load: Load, repeats: int
) -> dict[str, list[Sample]]:
    """Each mode ``repeats`` times, alternated; the first of each pair takes turns."""
    names = list(modes)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for repeat in range(repeats):
        order = names if repeat % 2 == 0 else names[::-1]
        print(f"- run {repeat + 1} of {repeats}", flush=True)
        for name in order:
            samples[name].append(run_once(bench, watch, name, modes[name], load))
    return samples


# -- the table -----------------------------------------------------------------------------


def median(values: list[float | None]) -> float | None:
    """The median of the values measured (None when none was)."""
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def spread(values: list[float | None], digits: int = 0) -> str:
    """The median, and the range of the runs when there are several: ``180,000 (176,000-182,000)``."""
    known = [value for value in values if value is not None]
    if not known:
        return "-"
    shown = f"{{:,.{digits}f}}"
    middle = shown.format(statistics.median(known))
    if len(known) < 2:
        return middle
    return f"{middle} ({shown.format(min(known))}-{shown.format(max(known))})"


@dataclass
class Row:
    """One line of the comparison table."""

    label: str
    baseline: list[float | None]
    contender: list[float | None]
    #: ``ratio`` (the contender at least this share of the baseline) or ``within`` (at most
    #: this many above it); None for a figure without a target.
    rule: tuple[str, float] | None = None
    digits: int = 0
    #: Whether the ratio of the two medians means something (not for CPU shares).
    ratio: bool = True

    def compare(self) -> tuple[str, str, str]:
        """The ratio (or difference), the target, and PASS / FAIL (or ``-``)."""
        base, other = median(self.baseline), median(self.contender)
        if self.rule is None:
            ratio = f"{other / base:.2f}" if self.ratio and base and other is not None else ""
            return ratio, "", ""
        kind, limit = self.rule
        if base is None or other is None:
            return "-", self.target(), "not measured"
        if kind == "ratio":
            share = other / base if base else math.inf
            return f"{share:.3f}", self.target(), "PASS" if share >= limit else "FAIL"
        return f"{other - base:+.1f} ms", self.target(), "PASS" if other - base <= limit else "FAIL"

    def target(self) -> str:
        """The target, in words."""
        if self.rule is None:
            return ""
        kind, limit = self.rule
        return f">= {limit:.2f}" if kind == "ratio" else f"<= +{limit:g} ms"


def print_table(rows: list[Row], repeats: int) -> list[str]:
    """The comparison as a Markdown table; returns the verdicts."""
    runs = f"median of {repeats} runs (range)" if repeats > 1 else "one run"
    print(f"\nFleets over Dask workers: each figure the {runs}\n")
    print(f"| figure | {PROCESSES} | {CLUSTER} | cluster / processes | target | verdict |")
    print("|---|---|---|---|---|---|")
    verdicts = []
    for row in rows:
        ratio, target, verdict = row.compare()
        if verdict:
            verdicts.append(verdict)
        print(
            f"| {row.label} | {spread(row.baseline, row.digits)} | {spread(row.contender, row.digits)}"
            f" | {ratio} | {target} | {verdict} |"
        )
    return verdicts


def rows_for(scenario: str, samples: dict[str, list[Sample]], plan: Plan) -> list[Row]:
    """The table's rows for one compared scenario."""
    base, other = samples[PROCESSES], samples[CLUSTER]

    def pick(getter: Callable[[Sample], float | None]) -> tuple[list[float | None], list[float | None]]:
        return [getter(s) for s in base], [getter(s) for s in other]

    def common(name: str) -> list[Row]:
        return [
            Row(f"{name}: parent CPU %", *pick(lambda s: s.parent_cpu), digits=1, ratio=False),
            Row(f"{name}: engines' CPU %", *pick(lambda s: s.worker_cpu), ratio=False),
            Row(f"{name}: msg/s per core of the engines (own count)", *pick(lambda s: s.per_core)),
            Row(f"{name}: other programs' CPU %", *pick(lambda s: s.others_cpu), ratio=False),
        ]

    if scenario in ("qos0", "qos1"):
        qos = 1 if scenario == "qos1" else 0
        devices = plan.qos1_devices if qos else plan.qos0_devices
        target = 0.90 if qos else 0.95
        name = f"QoS {qos}, {devices:,} devices, capacity"
        own = "acked" if qos else "written"
        return [
            Row(f"{name}: broker msg/s", *pick(lambda s: s.broker_rate), ("ratio", target)),
            Row(f"{name}: summary msg/s ({own})", *pick(lambda s: s.summary_rate), ("ratio", target)),
            *common(name),
        ]
    name = f"QoS 0, {plan.lateness_devices:,} devices at {plan.lateness_rate:,.0f} msg/s"
    return [
        Row(f"{name}: lateness p99 ms", *pick(lambda s: s.lateness("p99")), ("within", 5.0), digits=1),
        Row(f"{name}: lateness p50 ms", *pick(lambda s: s.lateness("p50")), digits=1),
        Row(f"{name}: broker msg/s", *pick(lambda s: s.broker_rate)),
        *common(name),
    ]


# -- scenarios -----------------------------------------------------------------------------


def compared(bench: Bench, watch: Watch, scenario: str, plan: Plan) -> dict[str, list[Sample]]:
    """``qos0``, ``qos1`` or ``lateness``: both modes, alternated."""
    if scenario == "lateness":
        devices = plan.lateness_devices
        interval = devices * engine_messages_per_instant() / plan.lateness_rate
        load = Load(devices, plan.duration, 0, interval, CONNECT_TIMEOUT_S)
        what = f"{devices:,} devices every {interval:.4g}s, {plan.lateness_rate:,.0f} msg/s, QoS 0, steady"
    else:
        qos = 1 if scenario == "qos1" else 0
        devices = plan.qos1_devices if qos else plan.qos0_devices
        load = Load(devices, plan.duration, qos, 0.0, CONNECT_TIMEOUT_S)
        what = f"{devices:,} devices, QoS {qos}, capacity mode (--interval 0)"
    print(f"\n== {scenario}: {what}, {plan.duration:g}s each ==", flush=True)
    return alternate(bench, watch, MODES, load, plan.repeats)


@dataclass
class Ceiling:
    """The ``ceiling`` scenario's runs, by mode."""

    devices: int
    samples: dict[str, list[Sample]] = field(default_factory=dict)


def ceiling(bench: Bench, watch: Watch, plan: Plan) -> Ceiling:
    """``--cluster local:1`` and ``local:2`` flat out at QoS 0: what a worker reaches."""
    devices = plan.ceiling_devices
    print(f"\n== ceiling: {devices:,} devices, QoS 0, capacity mode, local:1 and local:2 ==", flush=True)
    load = Load(devices, plan.duration, 0, 0.0, CONNECT_TIMEOUT_S)
    return Ceiling(devices, alternate(bench, watch, CEILING, load, plan.repeats))


def print_ceiling(result: Ceiling) -> None:
    """Per worker: what the broker took, what the worker wrote, its CPU, and msg/s per core."""
    print(f"\nWhat a worker reaches: {result.devices:,} devices at QoS 0, capacity mode\n")
    print(
        "| workers | broker msg/s | written per worker (own count) | CPU per worker | written msg/s per"
        " worker core | loop lag p99 | saturated seconds | broker CPU | other programs' CPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, samples in result.samples.items():
        workers = int(mode.split(":")[1])
        written = [s.summary_rate / workers if s.summary_rate else None for s in samples]
        each_cpu = [s.worker_cpu / workers if s.worker_cpu is not None else None for s in samples]
        lags = [max((w["loop_lag_p99_ms"] or 0.0) for w in s.workers) if s.workers else None for s in samples]
        saturated = [
            f"{sum(w['saturated_seconds'] for w in s.workers)}/{sum(w['run_seconds'] for w in s.workers)}"
            for s in samples
            if s.workers
        ]
        print(
            f"| {mode} | {spread([s.broker_rate for s in samples])} | {spread(written)}"
            f" | {spread(each_cpu)} % | {spread([s.per_core for s in samples])} | {spread(lags, 1)} ms"
            f" | {', '.join(saturated) or '-'} | {spread([s.outcome.broker_window for s in samples])} %"
            f" | {spread([s.others_cpu for s in samples])} % |"
        )


# -- what merging costs the parent ---------------------------------------------------------


def synthetic_second(t: int, rng: random.Random) -> Second:
    """One worker's second, shaped like a QoS 1 run's at tens of thousands of msg/s: counters, and
    lateness, ack, loop-lag and connect histograms spread over a few hundred buckets."""
    second = Second(t)
    second.offered = second.sent = 40_000 + rng.randrange(1_000)
    second.acked = second.sent - rng.randrange(100)
    second.connected = second.connected_peak = second.fleet = 5_000
    second.cpu_s = second.cpu_busiest_s = 0.8
    second.wall_s = 1.0
    second.errors = {("ack", "timeout"): rng.randrange(5), ("publish", "not-connected"): rng.randrange(5)}
    for _ in range(2_000):
        second.lateness.record(rng.lognormvariate(math.log(0.001), 1.5), 20)
        second.ack.record(rng.lognormvariate(math.log(0.005), 1.0), 20)
    for _ in range(200):
        second.lag.record(rng.lognormvariate(math.log(0.002), 1.0))
        second.connect.record(rng.lognormvariate(math.log(0.05), 0.5))
    slowest = [(rng.uniform(50, 200), f"dev{rng.randrange(99_999):05d}") for _ in range(10)]
    second.slowest = sorted(slowest, reverse=True)
    return second


@dataclass(frozen=True)
class MergeCost:
    """µs per worker per second, for one worker count."""

    workers: int
    blob_bytes: int
    decode_us: float
    merge_us: float

    @property
    def cluster_us(self) -> float:
        """What the cluster's parent does with each worker's second: one decode and the merge."""
        return self.decode_us + self.merge_us


def time_merge(workers: int, seconds: int, pool: list[dict[str, Any]]) -> MergeCost:
    """Decode (unpickle + ``Second.from_wire``) and merge ``workers`` seconds, ``seconds`` times;
    the median second's timings, per worker."""
    blobs = [
        [
            pickle.dumps(
                ("second", {**pool[(t * workers + w) % len(pool)], "t": t}, []), pickle.HIGHEST_PROTOCOL
            )
            for w in range(workers)
        ]
        for t in range(seconds)
    ]
    decode: list[float] = []
    merge: list[float] = []
    for batch in blobs:
        started = time.perf_counter()
        parts = [Second.from_wire(pickle.loads(blob)[1]) for blob in batch]  # noqa: S301 - made above
        decoded = time.perf_counter()
        merge_by_second([[part] for part in parts])
        merge.append(time.perf_counter() - decoded)
        decode.append(decoded - started)
    per = 1e6 / workers
    size = statistics.mean(len(blob) for blob in blobs[0])
    return MergeCost(workers, int(size), statistics.median(decode) * per, statistics.median(merge) * per)


def merge_costs(plan: Plan) -> list[MergeCost]:
    """The ``merge`` scenario: the parent's cost per worker per second, for several worker counts."""
    print(f"\n== merge: {', '.join(map(str, MERGE_WORKERS))} workers' seconds, {plan.merge_seconds} times ==")
    wait_quiet()
    rng = random.Random(1)
    pool = [synthetic_second(0, rng).to_wire() for _ in range(16)]
    return [time_merge(workers, plan.merge_seconds, pool) for workers in MERGE_WORKERS]


def print_merge(costs: list[MergeCost]) -> None:
    """µs per worker per second, and the share of the parent's core it would take."""
    print("\nWhat the parent spends per worker per second (median second; synthetic QoS 1 seconds)\n")
    print(
        "| workers | a second on the wire | decode | merge | cluster's parent (decode + merge)"
        " | one core's share at 1 s per second |"
    )
    print("|---|---|---|---|---|---|")
    for cost in costs:
        share = cost.cluster_us * cost.workers / 1e4  # µs per second -> % of a core
        print(
            f"| {cost.workers} | {cost.blob_bytes / 1024:.1f} KiB | {cost.decode_us:.0f} µs"
            f" | {cost.merge_us:.0f} µs | {cost.cluster_us:.0f} µs | {share:.1f} % |"
        )


# -- main ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The command line, parsed."""

    scenarios: tuple[str, ...]
    plan: Plan
    keep: bool


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="bench/cluster.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", default="all", help=f"all, or some of {','.join(SCENARIOS)}")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: one run each, {QUICK.duration:g}s, {QUICK.qos0_devices:,} devices at QoS 0,"
        f" {QUICK.qos1_devices:,} at QoS 1, {QUICK.lateness_devices:,} at {QUICK.lateness_rate:,.0f} msg/s"
        f" for lateness, {QUICK.ceiling_devices:,} for the ceiling",
    )
    parser.add_argument(
        "--repeats", type=int, help=f"runs of each mode (default {FULL.repeats}; --quick {QUICK.repeats})"
    )
    parser.add_argument(
        "--duration",
        type=float,
        help=f"seconds of publishing per run (default {FULL.duration:g}; --quick {QUICK.duration:g})",
    )
    parser.add_argument(
        "--lateness-rate",
        type=float,
        help=f"lateness: msg/s of the steady fleet (default {FULL.lateness_rate:,.0f};"
        f" --quick {QUICK.lateness_rate:,.0f})",
    )
    parser.add_argument("--keep", action="store_true", help="keep the runs' output and run folders")
    args = parser.parse_args(argv)
    scenarios = SCENARIOS if args.scenario == "all" else tuple(args.scenario.split(","))
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario: {', '.join(sorted(unknown))} (some of {','.join(SCENARIOS)})")
    plan = QUICK if args.quick else FULL
    shortest = SKIP_HEAD_S + SKIP_TAIL_S + 2 * SYS_PERIOD_S  # a window holding two $SYS ticks
    if args.duration is not None and args.duration < shortest:
        parser.error(f"--duration must be at least {shortest:g}s (a steady window of two $SYS ticks)")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.lateness_rate is not None and args.lateness_rate <= 0:
        parser.error("--lateness-rate must be above 0")
    plan = Plan(
        args.repeats or plan.repeats,
        args.duration or plan.duration,
        plan.qos0_devices,
        plan.qos1_devices,
        plan.lateness_devices,
        args.lateness_rate or plan.lateness_rate,
        plan.ceiling_devices,
        plan.merge_seconds,
    )
    return Settings(scenarios, plan, args.keep)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_scenarios(bench: Bench, watch: Watch, settings: Settings) -> None:
    """Each scenario asked for, then the tables."""
    plan = settings.plan
    rows: list[Row] = []
    result: Ceiling | None = None
    # First, while nothing of this benchmark has run yet: it times this process alone
    costs = merge_costs(plan) if "merge" in settings.scenarios else []
    for scenario in settings.scenarios:
        if scenario in ("qos0", "qos1", "lateness"):
            rows.extend(rows_for(scenario, compared(bench, watch, scenario, plan), plan))
        elif scenario == "ceiling":
            result = ceiling(bench, watch, plan)
    if rows:
        verdicts = print_table(rows, plan.repeats)
        print(f"\ntargets met: {verdicts.count('PASS')} of {len(verdicts)}")
    if result is not None:
        print_ceiling(result)
    if costs:
        print_merge(costs)


def main(argv: list[str] | None = None) -> int:
    """Start a broker, run the scenarios, print the tables."""
    settings = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        with PlainBroker() as broker:
            counters = BrokerCounters(broker.port)
            bench = Bench(broker, counters, workdir)
            watch = Watch(bench)
            print(
                f"machine: {len(os.sched_getaffinity(0))} cores; {broker.version()} on port"
                f" {broker.port}; scenarios: {', '.join(settings.scenarios)}"
            )
            try:
                run_scenarios(bench, watch, settings)
            finally:
                bench.stop_current()
                watch.close()
                counters.close()
    except KeyboardInterrupt:
        print("interrupted: the run going on and the broker are stopped")
        return 130
    except RuntimeError as exc:  # the broker would not start
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        if settings.keep:
            print(f"kept the runs' output in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
