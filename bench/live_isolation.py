"""Live isolation: what a frozen and a stalled viewer cost 20 normal ones.

One run, on this machine:

1. a lab instance (its own, on free ports, or a running one with ``--env-file``);
2. one publisher: ``--devices`` devices in one room at ``--rate`` messages per second in all,
   each ``{"value": n, "ts": <publish time>}``, and ``--heavy`` devices in another room sending
   6 KB text values twice a second (traffic that fills a stalled client's socket);
3. the baseline: ``--viewers`` normal viewers of the room (``stress viewers``' audience) watch
   for ``--duration`` seconds;
4. the same viewers watch again, while a viewer of the whole site in its own process is frozen
   (SIGSTOP, as a laptop going to sleep) and another never reads its socket.

It prints the normal viewers' latency percentiles in both phases and their ratio, the longest
time they went without an update, missed final values, the portal's memory (worker RSS) before
and at its peak, and the clients the portal dropped.

    .venv/bin/python bench/live_isolation.py --help

It prints figures; it passes or fails nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlab import lab_instance  # noqa: E402 - bench/ is on sys.path when this runs as a script
from mqtt_wire import RawPublisher  # noqa: E402
from portal_probe import PeakMemory, sign_in, worker_rss_mib  # noqa: E402

from labctl.config import LabConfig  # noqa: E402
from stress.viewers.audience import Plan, Result, watch  # noqa: E402
from stress.viewers.reference import BrokerAccount  # noqa: E402

CLIENTS = ROOT / "tests" / "web" / "live_clients.py"
ROOM, HEAVY_ROOM = "isolation", "isolation-heavy"
HEAVY_BYTES = 6000


def live_clients() -> ModuleType:
    """tests/web/live_clients.py: the frozen and the stalled viewer (loaded by path)."""
    spec = importlib.util.spec_from_file_location("live_clients", CLIENTS)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {CLIENTS}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


class Publisher(threading.Thread):
    """The room's numbered, timed values and the heavy room's big text values, until stopped."""

    def __init__(self, config: LabConfig, devices: int, rate: float, heavy: int) -> None:
        super().__init__(daemon=True)
        env = config.env
        self.raw = RawPublisher(
            config.port("MQTT_PORT"), env["MQTT_ADMIN_USER"], env["MQTT_ADMIN_PASSWORD"], 0
        )
        self.root, self.devices, self.rate, self.heavy = env["TOPIC_ROOT"], devices, rate, heavy
        self.stopped = threading.Event()

    def run(self) -> None:
        tick, sequence, ticks = 0.05, 0, 0
        per_tick = max(1, round(self.rate * tick))
        next_at = time.monotonic()
        filler = "x" * HEAVY_BYTES
        while not self.stopped.is_set():
            now_ms = int(time.time() * 1000)
            packets = []
            for _ in range(per_tick):
                topic = f"{self.root}/{ROOM}/d{sequence % self.devices}/seq".encode()
                packets.append(self.raw.packet(topic, json.dumps({"value": sequence, "ts": now_ms}).encode()))
                sequence += 1
            if ticks % 10 == 0:  # twice a second
                for device in range(self.heavy):
                    topic = f"{self.root}/{HEAVY_ROOM}/h{device}/blob".encode()
                    packets.append(self.raw.packet(topic, f"{ticks}{filler}".encode()))
            self.raw.send(packets)
            ticks += 1
            next_at += tick
            self.stopped.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)
        self.raw.close(1.0, 0)


def dropped(session: requests.Session, config: LabConfig) -> int:
    text = session.get(f"http://127.0.0.1:{config.port('PORTAL_PORT')}/metrics", timeout=10).text
    found = re.search(r"^portal_live_dropped_total (\S+)$", text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


def audience(config: LabConfig, args: argparse.Namespace) -> Result:
    plan = Plan(
        portal_url=f"http://127.0.0.1:{config.port('PORTAL_PORT')}",
        username=config.env["PORTAL_ADMIN_USER"],
        password=config.env["PORTAL_ADMIN_PASSWORD"],
        count=args.viewers,
        scope="room",
        room=ROOM,
        duration=args.duration,
        reference=BrokerAccount(
            "127.0.0.1",
            config.port("MQTT_PORT"),
            config.env["MQTT_ADMIN_USER"],
            config.env["MQTT_ADMIN_PASSWORD"],
            config.env["TOPIC_ROOT"],
        ),
    )
    return asyncio.run(watch(plan))


def summary(result: Result) -> dict[str, Any]:
    figures = result.as_dict()
    return {
        "p50": figures["latency_ms"]["p50"],
        "p99": figures["latency_ms"]["p99"],
        "max": figures["latency_ms"]["max"],
        "missed": figures["missed"],
        "updates": figures["updates_per_viewer"]["median"],
        "dropped_viewers": figures["dropped"],
    }


def bad_clients_phase(config: LabConfig, args: argparse.Namespace) -> tuple[dict[str, Any], int, float]:
    """The audience again, beside a frozen and a stalled viewer: its figures, the clients the
    portal dropped, and the portal's peak memory."""
    url = f"http://127.0.0.1:{config.port('PORTAL_PORT')}"
    session, cookie = sign_in(config)
    frozen = subprocess.Popen(
        [sys.executable, str(CLIENTS), url, cookie, '[{"scope": "site"}]'], stdout=subprocess.PIPE, text=True
    )
    if frozen.stdout is None or frozen.stdout.readline().strip() != "subscribed":
        raise SystemExit("the frozen viewer did not subscribe")
    os.kill(frozen.pid, signal.SIGSTOP)
    stalled = live_clients().RawViewer(url, cookie, [{"scope": "site"}], receive_buffer=4096)
    dropped_before = dropped(session, config)
    try:
        with PeakMemory(config) as memory:
            figures = summary(audience(config, args))
    finally:
        frozen.kill()
        frozen.wait(5)
        stalled.close()
    return figures, dropped(session, config) - dropped_before, memory.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-file", type=Path, help="measure the running lab of this .env")
    parser.add_argument("--viewers", type=int, default=20, help="normal viewers of the room (default 20)")
    parser.add_argument("--devices", type=int, default=20, help="devices of the watched room (default 20)")
    parser.add_argument(
        "--rate", type=float, default=200, help="their messages per second in all (default 200)"
    )
    parser.add_argument("--heavy", type=int, default=40, help="devices sending 6 KB values (default 40)")
    parser.add_argument(
        "--duration",
        type=float,
        default=60,
        help="seconds each phase watches (default 60: past the 45 s ping timeout)",
    )
    args = parser.parse_args()
    with lab_instance(args.env_file, "bench-isolation-", services=("db", "mosquitto", "web")) as (
        config,
        _lab,
    ):
        publisher = Publisher(config, args.devices, args.rate, args.heavy)
        publisher.start()
        try:
            time.sleep(2)
            print(f"baseline: {args.viewers} viewers of the room for {args.duration:g} s ...")
            rss_before = worker_rss_mib(config)
            baseline = summary(audience(config, args))
            print("again, beside a frozen and a stalled viewer of the whole site ...")
            with_bad, bad_dropped, rss_peak = bad_clients_phase(config, args)
        finally:
            publisher.stop()

    print()
    print(f"{'':34} {'baseline':>10} {'+ bad clients':>14} {'ratio':>7}")
    for key in ("p50", "p99", "max"):
        a, b = baseline[key], with_bad[key]
        print(f"normal viewers' latency {key} (ms)   {a:>10.0f} {b:>14.0f} {b / a:>7.2f}")
    print(f"updates per normal viewer (median) {baseline['updates']:>10.0f} {with_bad['updates']:>14.0f}")
    print(f"missed final values                {baseline['missed']:>10} {with_bad['missed']:>14}")
    viewers_dropped = (baseline["dropped_viewers"], with_bad["dropped_viewers"])
    print(f"normal viewers dropped             {viewers_dropped[0]:>10} {viewers_dropped[1]:>14}")
    print(f"bad clients dropped by the portal  {'':>10} {bad_dropped:>14}")
    print(f"portal memory (RSS, MiB)           {rss_before:>10.0f} {rss_peak:>14.0f}  (peak)")


if __name__ == "__main__":
    main()
