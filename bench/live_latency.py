"""Live latency: publish-to-client delay of the portal's Socket.IO push, beside the broker's floor.

One run, on this machine:

1. a lab instance (its own, on free ports, or a running one with ``--env-file``);
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

from benchlab import lab_instance  # noqa: E402 - bench/ is on sys.path when this runs as a script
from mqtt_wire import RawPublisher  # noqa: E402
from profiling import cpu_usage, print_cpu, start_profile, summarize_profile, worker_pid  # noqa: E402

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
        publisher.send(packets)
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
        help="also py-spy the portal for this long in the measured phase (the lab this run starts)",
    )
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace, config: LabConfig) -> Plan:
    env = config.env
    url = f"http://127.0.0.1:{config.port('PORTAL_PORT')}"
    start = time.time() + 20 + args.clients * 0.05  # time to connect every client
    measure_from = start + args.warmup
    stop_publish = measure_from + args.duration
    return Plan(
        portal_url=url,
        cookie=portal_cookie(url, env["PORTAL_ADMIN_USER"], env["PORTAL_ADMIN_PASSWORD"]),
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


def measure(args: argparse.Namespace, plan: Plan, cpu: dict[str, float]) -> tuple[Published, Report, Report]:
    """Run the receivers and the publisher; fills ``cpu`` with CPU seconds per program while publishing."""
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
    if time.time() > plan.start_publish:
        print("warning: connecting took longer than planned; the warm-up is shorter", file=sys.stderr)
    time.sleep(max(0.0, plan.start_publish - time.time()))
    seconds = args.warmup + args.duration
    watching = "the whole site" if plan.scope == "site" else "one room"
    print(
        f"publishing {args.rate:.0f} msg/s over {args.devices} devices in {plan.rooms} rooms "
        f"for {seconds:.0f} s; each client watches {watching} ..."
    )
    with cpu_usage(cpu):
        published = publish(plan)
    for final in finals:
        final.put(published.finals)
    portal, baseline = Report(), Report()
    for _ in procs:
        kind, report = results.get(timeout=120)
        (portal if kind == "socketio" else baseline).merge(report)
    for proc in procs:
        proc.join(10)
    return published, portal, baseline


def print_results(
    args: argparse.Namespace, env: dict[str, str], runs: tuple[Published, Report, Report]
) -> None:
    published, portal, baseline = runs
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
    print(
        f"generator event-loop lag      p99 {percentile(lag, 0.99):.0f} ms, max {percentile(lag, 1.0):.0f} ms"
    )
    print(f"generator CPU                 clients {portal.cpu_s:.1f} s, baseline {baseline.cpu_s:.1f} s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with lab_instance(args.env_file, "live-latency-") as (config, lab):
        plan = make_plan(args, config)
        cpu: dict[str, float] = {}
        pid = worker_pid(lab)
        spy_out: Path | None = None
        if args.profile and pid is None:
            print("--profile needs a lab this run starts (not --env-file): no portal profile")
        elif args.profile and pid is not None:
            spy_out = Path(tempfile.mkdtemp(prefix="live-latency-profile-")) / "profile.txt"
            seconds = int(min(args.profile, args.duration))
            # Started at the measured phase, from a timer: the main thread is busy publishing then.
            timer = threading.Timer(plan.measure_from - time.time(), start_profile, (pid, seconds, spy_out))
            timer.start()
        print_results(args, config.env, measure(args, plan, cpu))
        print()
        print_cpu(cpu)
        if spy_out is not None:
            deadline = time.time() + 30
            while not spy_out.exists() and time.time() < deadline:
                time.sleep(0.5)
            if spy_out.exists():
                print(f"portal profile ({seconds}s of the measured phase, share of its busy samples):")
                print("\n".join(summarize_profile(spy_out)))
            else:
                print("no portal profile was written (is py-spy installed, with ptrace rights?)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
