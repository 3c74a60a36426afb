"""Live latency: publish-to-client delay of the portal's Socket.IO push, beside the broker's floor.

One run, on this machine, for each portal replica count of ``--replicas`` (default ``1``):

1. a lab instance of its own on free ports (PostgreSQL, Mosquitto and the portal: one process,
   or with ``--replicas 2`` Redis, two replicas and the HAProxy front), or a running one with
   ``--env-file``; the clients use its single address (PORTAL_PORT);
2. ``--clients`` Socket.IO clients (the lean :class:`stress.viewers.portal_client.Viewer`, spread over
   ``--procs`` processes),
   signed in, each subscribed to one room (or, with ``--scope site``, to the site);
3. ``--baseline`` plain MQTT subscribers on the broker's WebSocket listener (the floor: what a
   browser speaking MQTT directly to the broker would see), in their own process, each watching
   what the Socket.IO client of the same index watches (one room, or the site);
4. one publisher at a steady ``--rate`` over ``--devices`` devices, each message
   ``{"value": <sequence number>, "ts": <publish time, ms>}``, so every receiver computes
   ``latency = arrival - ts`` for each value it gets.

The portal coalesces (newest value per attribute, at most one update per ``PORTAL_LIVE_FLUSH_MS``),
so a client is *expected* to see fewer updates than were published; what must not happen is a
device whose final value never reaches a client: that is counted as *missed*. Each client process
measures its own event-loop lag: when that is high, the generator, not the portal, is slow.

With several replica counts (``--replicas 1,2``), each count gets a lab of its own, measured in
turn, and a table at the end compares them: clients, latency percentiles, missed values, the
floor and the p99 of each count against one replica's, and the clients each replica held.

    .venv/bin/python bench/live_latency.py --help

It prints figures; it passes or fails nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import queue
import re
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlab import lab_instance, portal_services, portal_urls, replica_counts  # noqa: E402 - bench/ is on sys.path
from mqtt_wire import RawPublisher  # noqa: E402
from portal_probe import live_clients  # noqa: E402
from profiling import (  # noqa: E402
    cpu_usage,
    lab_processes,
    portal_workers,
    print_cpu,
    start_profile,
    summarize_profile,
)

from labctl.config import LabConfig  # noqa: E402
from stress.viewers.portal_client import Viewer, ViewerError  # noqa: E402
from wire.mqtt import (  # noqa: E402
    connect_packet,
    publish_payload,
    split,
    subscribe_packet,
)

#: Seconds given to what is in flight to arrive after the last publish.
DRAIN_S = 3.0
#: Period of the event-loop lag probe.
LAG_TICK_S = 0.01
#: Publisher pacing tick.
PUBLISH_TICK_S = 0.01


# -- plan and results ----------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Everything the processes of one run share."""

    portal_url: str
    cookie: str
    mqtt_port: int
    ws_port: int
    admin: tuple[str, str]
    root: str
    room: str  # prefix of this run's room names
    rooms: int
    scope: str  # what each Socket.IO client subscribes to: "site", or "room" (one room each)
    devices: int
    rate: float
    qos: int
    start_publish: float  # time.time() values
    measure_from: float
    stop_publish: float
    stop_at: float

    @property
    def measure_from_ms(self) -> int:
        return int(self.measure_from * 1000)

    def room_name(self, room_index: int) -> str:
        return f"{self.room}-{room_index:03d}"

    def room_of(self, device_index: int) -> str:
        """Devices are dealt to the rooms in turn."""
        return self.room_name(device_index % self.rooms)

    def topic(self, index: int) -> str:
        return f"{self.root}/{self.room_of(index)}/{device_name(index)}/v"

    def client_scope(self, client_index: int) -> dict[str, str]:
        """The subscription of one client: the site, or one room (clients spread over the rooms)."""
        if self.scope == "site":
            return {"scope": "site"}
        return {"scope": "room", "room": self.room_name(client_index % self.rooms)}


def device_name(index: int) -> str:
    return f"dev{index:05d}"


@dataclass
class Report:
    """What one receiving process saw; the parent merges them."""

    latency_ms: Counter[int] = field(default_factory=Counter)
    lag_ms: Counter[int] = field(default_factory=Counter)
    updates: int = 0
    missed: int = 0
    clients: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    #: Why connections failed or dropped early, by reason (the first line of the error).
    reasons: Counter[str] = field(default_factory=Counter)
    cpu_s: float = 0.0

    def merge(self, other: Report) -> None:
        self.latency_ms.update(other.latency_ms)
        self.lag_ms.update(other.lag_ms)
        self.updates += other.updates
        self.missed += other.missed
        self.clients += other.clients
        self.connect_failures += other.connect_failures
        self.disconnects += other.disconnects
        self.reasons.update(other.reasons)
        self.cpu_s += other.cpu_s


def reason(exc: BaseException) -> str:
    """An error as one short line: its type, and the first line of its message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__


def percentile(histogram: Counter[int], fraction: float) -> float:
    """The value at ``fraction`` of the samples of a histogram of integer milliseconds."""
    total = sum(histogram.values())
    if total == 0:
        return float("nan")
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= fraction * total:
            return float(value)
    return float(max(histogram))


def summary(histogram: Counter[int]) -> str:
    if not histogram:
        return "no samples"
    quantiles = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
    return "  ".join(f"{name} {percentile(histogram, q):6.0f}" for name, q in quantiles)


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


# -- Socket.IO clients ---------------------------------------------------------------------


async def lag_probe(lags: Counter[int], until: float) -> None:
    """Record how late a short sleep wakes up: the event loop's own delay."""
    loop = asyncio.get_running_loop()
    while time.time() < until:
        before = loop.time()
        await asyncio.sleep(LAG_TICK_S)
        lags[round((loop.time() - before - LAG_TICK_S) * 1000)] += 1


class Receivers:
    """``count`` Socket.IO clients in one event loop, recording latency and the last value per device."""

    def __init__(self, plan: Plan, count: int, first_client: int) -> None:
        self.plan = plan
        self.count = count
        self.first_client = first_client
        self.report = Report()
        self.closing = False
        self.last: list[dict[str, int]] = []
        self.scopes: list[dict[str, str]] = []

    def make_client(self, scope: dict[str, str]) -> Viewer:
        last: dict[str, int] = {}
        self.last.append(last)
        self.scopes.append(scope)
        report, measure_from = self.report, self.plan.measure_from_ms
        prefix = self.plan.room

        def mine(room: str) -> bool:
            return room == scope["room"] if "room" in scope else room.startswith(prefix)

        def on_event(name: str, values: Any) -> None:
            if name != "values":
                return
            now = time.time() * 1000
            for value in values:
                if mine(value["room"]):
                    last[value["device"]] = int(value["value"])
                    if value["ts"] >= measure_from:
                        report.latency_ms[int(now - value["ts"])] += 1
                    report.updates += 1

        return Viewer(
            self.plan.portal_url, on_event, headers={"Cookie": self.plan.cookie}, auth={"scopes": [scope]}
        )

    async def connect(self, session: aiohttp.ClientSession, client: Viewer) -> bool:
        try:
            await client.connect(session, timeout=60)
        except (ViewerError, aiohttp.ClientError, OSError, TimeoutError) as exc:  # counted; the others go on
            self.report.connect_failures += 1
            self.report.reasons[f"connect: {reason(exc)}"] += 1
            return False
        return True

    async def listen(self, client: Viewer) -> None:
        try:
            await client.listen()
        except (aiohttp.ClientError, OSError, ValueError) as exc:  # a reset, or garbage: counted
            if not self.closing:
                self.report.reasons[f"dropped: {reason(exc)}"] += 1
        if not self.closing:
            self.report.disconnects += 1

    async def run(self, ready: Any, finals_queue: Any) -> Report:
        scopes = [self.plan.client_scope(self.first_client + i) for i in range(self.count)]
        clients = [self.make_client(scope) for scope in scopes]
        probe = asyncio.create_task(lag_probe(self.report.lag_ms, self.plan.stop_at))
        # Every client holds its connection for the whole run: no pool limit (aiohttp's default of
        # 100 would leave the rest waiting for a free connection until they time out).
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            connected = await asyncio.gather(*(self.connect(session, client) for client in clients))
            self.report.clients = sum(connected)
            ready.put(self.report.clients)
            listeners = [
                asyncio.create_task(self.listen(c)) for c, ok in zip(clients, connected, strict=True) if ok
            ]
            await asyncio.sleep(max(0.0, self.plan.stop_at - time.time()))
            self.closing = True
            await asyncio.gather(*(c.close() for c, ok in zip(clients, connected, strict=True) if ok))
            await asyncio.gather(*listeners)
        probe.cancel()
        finals: dict[str, int] = finals_queue.get()
        for last, scope, ok in zip(self.last, self.scopes, connected, strict=True):
            if ok:
                expected = {
                    device: final
                    for device, final in finals.items()
                    if "room" not in scope or self.plan.room_of(int(device[3:])) == scope["room"]
                }
                self.report.missed += sum(1 for d, final in expected.items() if last.get(d, -1) < final)
        return self.report


def socketio_process(plan: Plan, clients: tuple[int, int], queues: tuple[Any, Any, Any]) -> None:
    """Entry point of one Socket.IO client process, holding `clients` = (first index, count)."""
    ready, finals, results = queues
    start = cpu_seconds()
    first, count = clients
    report = asyncio.run(Receivers(plan, count, first).run(ready, finals))
    report.cpu_s = cpu_seconds() - start
    results.put(("socketio", report))


# -- MQTT over WebSocket baseline ----------------------------------------------------------


async def _ws_subscriber(plan: Plan, index: int, report: Report, subscribed: asyncio.Event) -> None:
    # The same view as Socket.IO client ``index``: its room, or every room of this run (other
    # traffic on a shared lab would add samples: use an own lab).
    scope = plan.client_scope(index)
    topic = f"{plan.root}/{scope['room']}/+/v" if "room" in scope else f"{plan.root}/+/+/v"

    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"ws://127.0.0.1:{plan.ws_port}/mqtt", protocols=("mqtt",)) as ws,
    ):
        await ws.send_bytes(connect_packet(f"bench-ws-{uuid.uuid4().hex[:8]}", *plan.admin))
        await ws.send_bytes(subscribe_packet(topic))
        buffer = bytearray()
        measure_from = plan.measure_from_ms
        latency = report.latency_ms
        while time.time() < plan.stop_at:
            try:
                message = await ws.receive(timeout=max(0.1, plan.stop_at - time.time()))
            except TimeoutError:
                break
            if message.type != aiohttp.WSMsgType.BINARY:
                break
            now = time.time() * 1000
            buffer += message.data
            for first, body in split(buffer):
                kind = first >> 4
                if kind == 3:
                    ts = json.loads(publish_payload(first, body))["ts"]
                    if ts >= measure_from:
                        latency[int(now - ts)] += 1
                    report.updates += 1
                elif kind == 9:  # SUBACK
                    subscribed.set()


async def _ws_subscribers(plan: Plan, count: int, ready: Any) -> Report:
    report = Report()
    events = [asyncio.Event() for _ in range(count)]
    tasks = [
        asyncio.create_task(_ws_subscriber(plan, index, report, event)) for index, event in enumerate(events)
    ]
    probe = asyncio.create_task(lag_probe(report.lag_ms, plan.stop_at))
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in events)), 30)
    report.clients = count
    ready.put(count)
    await asyncio.gather(*tasks)
    probe.cancel()
    return report


def baseline_process(plan: Plan, count: int, queues: tuple[Any, Any]) -> None:
    """Plain MQTT subscribers on the broker's WebSocket listener: the floor for live delivery."""
    ready, results = queues
    start = cpu_seconds()
    report = asyncio.run(_ws_subscribers(plan, count, ready))
    report.cpu_s = cpu_seconds() - start
    results.put(("baseline", report))


# -- publisher -----------------------------------------------------------------------------


@dataclass
class Published:
    sent: int = 0
    acked: int = 0
    finals: dict[str, int] = field(default_factory=dict)
    behind_s: float = 0.0


@dataclass
class Run:
    """One lab's figures: what was published, what the Socket.IO clients and the floor saw."""

    replicas: int
    published: Published
    portal: Report
    baseline: Report
    #: Socket.IO clients each portal process held once all had connected (``web``, ``web-1`` ...).
    served: dict[str, int]


def publish(plan: Plan) -> Published:
    """Publish at a steady rate, round-robin over the devices, until ``plan.stop_publish``."""
    publisher = RawPublisher(plan.mqtt_port, *plan.admin, plan.qos)
    topics = [plan.topic(index).encode() for index in range(plan.devices)]
    result = Published()
    owed = 0.0
    next_tick = time.monotonic()
    while time.time() < plan.stop_publish:
        owed += plan.rate * PUBLISH_TICK_S
        now_ms = int(time.time() * 1000)
        packets = []
        while owed >= 1:
            owed -= 1
            index = result.sent % plan.devices
            payload = f'{{"value": {result.sent}, "ts": {now_ms}}}'.encode()
            packets.append(publisher.packet(topics[index], payload))
            result.finals[device_name(index)] = result.sent
            result.sent += 1
        try:
            publisher.send(packets)
        except OSError as exc:
            raise SystemExit(
                f"the broker closed the publisher's connection after {result.sent} messages ({exc}); "
                "its log says why (--keep keeps the lab's logs)"
            ) from None
        next_tick += PUBLISH_TICK_S
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            result.behind_s = max(result.behind_s, -delay)
    publisher.close(DRAIN_S, result.sent)
    result.acked = publisher.acked
    return result


# -- the lab and the portal session --------------------------------------------------------


def portal_cookie(url: str, user: str, password: str) -> str:
    """Sign in through the form (with its CSRF token); returns the Cookie header to send."""
    session = requests.Session()
    form = session.get(f"{url}/login", timeout=10).text
    data = {"username": user, "password": password}
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form)
    if match:
        data["csrf_token"] = match.group(1)
    response = session.post(f"{url}/login", data=data, allow_redirects=False, timeout=10)
    if response.status_code not in (302, 303):
        raise SystemExit(f"cannot sign in to the portal at {url}: HTTP {response.status_code}")
    return "; ".join(f"{c.name}={c.value}" for c in session.cookies)


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--env-file", type=Path, help="measure the running lab of this .env (default: start one)")
    add(
        "--replicas",
        type=replica_counts,
        metavar="LIST",
        help="portal replica counts, each measured in a lab of its own, e.g. 1,2 (default 1; "
        "not with --env-file, which measures the lab's own PORTAL_REPLICAS)",
    )
    add("--clients", type=int, default=200, help="Socket.IO clients (default 200)")
    add("--procs", type=int, default=4, help="processes holding them (default 4)")
    add("--baseline", type=int, default=10, help="MQTT WebSocket subscribers (default 10)")
    add("--rate", type=float, default=5000, help="messages per second (default 5000)")
    add("--devices", type=int, default=1000, help="devices, one attribute each (default 1000)")
    add("--rooms", type=int, default=50, help="rooms the devices are spread over (default 50)")
    add(
        "--scope",
        choices=("room", "site"),
        default="room",
        help="each client watches one room (default; clients spread over the rooms) or the whole site",
    )
    add("--duration", type=float, default=20, help="measured seconds (default 20)")
    add("--warmup", type=float, default=5, help="seconds published before measuring (default 5)")
    add("--qos", type=int, choices=(0, 1), default=1, help="publish QoS (default 1)")
    add(
        "--profile",
        type=int,
        default=0,
        metavar="SECONDS",
        help="also py-spy each portal process for this long in the measured phase",
    )
    add("--keep", action="store_true", help="keep the started labs' folders (their logs)")
    args = parser.parse_args(argv)
    if args.env_file is not None and args.replicas is not None:
        parser.error(
            "--replicas starts labs of its own; with --env-file the lab's PORTAL_REPLICAS is measured"
        )
    return args


def make_plan(args: argparse.Namespace, config: LabConfig) -> Plan:
    env = config.env
    url = f"http://127.0.0.1:{config.port('PORTAL_PORT')}"
    # Signed in at a portal process's own address: through the front, the session would carry the
    # front's cookie naming a replica, and every client would be sent to that one. Each client is
    # a browser of its own, which the front places on a replica when it connects.
    sign_in_url = next(iter(portal_urls(config).values()))
    start = time.time() + 20 + args.clients * 0.05  # time to connect every client
    measure_from = start + args.warmup
    stop_publish = measure_from + args.duration
    return Plan(
        portal_url=url,
        cookie=portal_cookie(sign_in_url, env["PORTAL_ADMIN_USER"], env["PORTAL_ADMIN_PASSWORD"]),
        mqtt_port=config.port("MQTT_PORT"),
        ws_port=config.port("MQTT_WS_PORT"),
        admin=(env["MQTT_ADMIN_USER"], env["MQTT_ADMIN_PASSWORD"]),
        root=env.get("TOPIC_ROOT", "office"),
        room=f"bench-{uuid.uuid4().hex[:6]}",
        rooms=max(1, min(args.rooms, args.devices)),
        scope=args.scope,
        devices=args.devices,
        rate=args.rate,
        qos=args.qos,
        start_publish=start,
        measure_from=measure_from,
        stop_publish=stop_publish,
        stop_at=stop_publish + DRAIN_S,
    )


def measure(args: argparse.Namespace, config: LabConfig, plan: Plan, cpu: dict[str, float]) -> Run:
    """Run the receivers and the publisher; fills ``cpu`` with CPU seconds per program while
    publishing (each service of the lab and this benchmark's own processes on lines of their own).
    """
    ctx = mp.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    finals = [ctx.Queue() for _ in range(args.procs)]
    procs = []
    first = 0
    for index in range(args.procs):
        count = args.clients // args.procs + (1 if index < args.clients % args.procs else 0)
        queues = (ready, finals[index], results)
        procs.append(ctx.Process(target=socketio_process, args=(plan, (first, count), queues)))
        first += count
    if args.baseline:
        procs.append(ctx.Process(target=baseline_process, args=(plan, args.baseline, (ready, results))))
    for proc in procs:
        proc.start()
    try:
        connected = sum(ready.get(timeout=plan.start_publish - time.time() + 60) for _ in procs)
    except queue.Empty:
        for proc in procs:
            proc.terminate()
        raise SystemExit("the receivers did not all connect within a minute of the planned start") from None
    print(f"{connected} receivers connected ({args.clients} Socket.IO + {args.baseline} MQTT WebSocket)")
    served = live_clients(config)
    if time.time() > plan.start_publish:
        print("warning: connecting took longer than planned; the warm-up is shorter", file=sys.stderr)
    time.sleep(max(0.0, plan.start_publish - time.time()))
    seconds = args.warmup + args.duration
    watching = "the whole site" if plan.scope == "site" else "one room"
    print(
        f"publishing {args.rate:.0f} msg/s over {args.devices} devices in {plan.rooms} rooms "
        f"for {seconds:.0f} s; each client watches {watching} ..."
    )
    named = lab_processes(config)
    named[os.getpid()] = "bench publisher"
    for index, proc in enumerate(procs):
        if proc.pid is not None:
            named[proc.pid] = "bench Socket.IO clients" if index < args.procs else "bench MQTT floor"
    with cpu_usage(cpu, named=named):
        published = publish(plan)
    for final in finals:
        final.put(published.finals)
    portal, baseline = Report(), Report()
    for _ in procs:
        kind, report = results.get(timeout=120)
        (portal if kind == "socketio" else baseline).merge(report)
    for proc in procs:
        proc.join(10)
    return Run(config.replicas, published, portal, baseline, served)


def print_results(args: argparse.Namespace, env: dict[str, str], run: Run) -> None:
    """The figures of one lab."""
    published, portal, baseline = run.published, run.portal, run.baseline
    seconds = args.warmup + args.duration
    rate = published.sent / seconds
    behind_ms = published.behind_s * 1000
    lag = portal.lag_ms
    print()
    print(
        f"published        {published.sent} messages, {rate:.0f} msg/s (publisher <= {behind_ms:.0f} ms late)"
    )
    if args.qos:
        print(f"acknowledged     {published.acked} by the broker")
    print(f"flush interval   PORTAL_LIVE_FLUSH_MS={env.get('PORTAL_LIVE_FLUSH_MS', '100')}")
    print()
    print("latency, publish -> receiver, ms (measured phase)")
    print(f"  portal Socket.IO  {portal.clients:4d} clients  {summary(portal.latency_ms)}")
    print(f"  MQTT WebSocket    {baseline.clients:4d} clients  {summary(baseline.latency_ms)}  (floor)")
    print()
    per_client = portal.updates / max(1, portal.clients) / seconds
    print(f"updates per Socket.IO client  {per_client:.0f}/s (coalesced from {rate:.0f} msg/s)")
    print(f"missed final values           {portal.missed} (client x device pairs)")
    print(f"connect failures              {portal.connect_failures}; early disconnects {portal.disconnects}")
    for why, count in portal.reasons.most_common(5):
        print(f"  {count:5d} x {why}")
    print(f"clients per portal process    {served_line(run.served)}")
    print(
        f"generator event-loop lag      p99 {percentile(lag, 0.99):.0f} ms, max {percentile(lag, 1.0):.0f} ms"
    )
    print(f"generator CPU                 clients {portal.cpu_s:.1f} s, baseline {baseline.cpu_s:.1f} s")


def served_line(served: dict[str, int]) -> str:
    """``web-1 500, web-2 500``: the Socket.IO clients each portal process held."""
    return ", ".join(f"{name} {count}" for name, count in served.items()) or "unknown (no /metrics answer)"


def print_comparison(runs: list[Run]) -> None:
    """One line per replica count, the p99 of each against one replica's, and who held the clients."""
    one = next((run.portal.latency_ms for run in runs if run.replicas == 1), None)
    print()
    print("portal replicas side by side (latency publish -> client in ms, measured phase)")
    quantiles = " ".join(f"{name:>6}" for name in ("p50", "p95", "p99", "max"))
    print(
        f"  {'replicas':>8} {'clients':>8} {'failed':>7} {quantiles} {'missed':>7}"
        f" {'floor p50':>10} {'floor p99':>10}  {'p99 / 1 replica':>15}"
    )
    for run in runs:
        latency, floor = run.portal.latency_ms, run.baseline.latency_ms
        p99 = percentile(latency, 0.99)
        ratio = f"{p99 / percentile(one, 0.99):.2f}x" if one and latency else "-"
        cells = " ".join(f"{percentile(latency, q):6.0f}" for q in (0.5, 0.95, 0.99, 1.0))
        print(
            f"  {run.replicas:8d} {run.portal.clients:8d} {run.portal.connect_failures:7d} {cells}"
            f" {run.portal.missed:7d} {percentile(floor, 0.5):10.0f} {percentile(floor, 0.99):10.0f}"
            f"  {ratio:>15}"
        )
    print("Socket.IO clients each portal process held, once all had connected:")
    for run in runs:
        print(f"  {run.replicas} replica{'s' if run.replicas > 1 else ''}: {served_line(run.served)}")


def measure_lab(args: argparse.Namespace, config: LabConfig) -> Run:
    """Measure one lab (with a profile of each portal process when asked) and print its figures."""
    plan = make_plan(args, config)
    cpu: dict[str, float] = {}
    workers = portal_workers(config)
    seconds = int(min(args.profile, args.duration))
    profiles: dict[str, Path] = {}
    if args.profile and not workers:
        print("--profile: no portal process found in the lab's pid files (is it run by Compose?)")
    elif args.profile:
        spy_dir = Path(tempfile.mkdtemp(prefix="live-latency-profile-"))
        for name, pid in workers.items():
            profiles[name] = spy_dir / f"{name}.txt"
            # Started at the measured phase, from a timer: the main thread is busy publishing then.
            arguments = (pid, seconds, profiles[name])
            threading.Timer(plan.measure_from - time.time(), start_profile, arguments).start()
    run = measure(args, config, plan, cpu)
    print_results(args, config.env, run)
    print()
    print_cpu(cpu)
    for name, out in profiles.items():
        deadline = time.time() + 30
        while not out.exists() and time.time() < deadline:
            time.sleep(0.5)
        if out.exists():
            print(f"portal {name} profile ({seconds}s of the measured phase, share of its busy samples):")
            print("\n".join(summarize_profile(out)))
        else:
            print(f"no profile of {name} was written (is py-spy installed, with ptrace rights?)")
    return run


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = []
    if args.env_file is not None:
        with lab_instance(args.env_file, "live-latency-") as (config, _lab):
            runs.append(measure_lab(args, config))
    for count in args.replicas or ((1,) if args.env_file is None else ()):
        print(f"\n== {count} portal replica{'s' if count > 1 else ''} ==")
        # No Node-RED: the measurement does not need its rules, and they would take CPU of their own.
        services = ("db", "mosquitto", *portal_services(count))
        overrides = {"PORTAL_REPLICAS": str(count)}
        own = lab_instance(None, "live-latency-", services=services, overrides=overrides, keep=args.keep)
        with own as (config, _lab):
            runs.append(measure_lab(args, config))
    print_comparison(runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
