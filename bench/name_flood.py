"""A flood of new names: 20,000 invented devices, and what the portal's answers and memory do.

One run, on this machine:

1. a lab instance (database, broker, portal; its own on free ports, or a running one with
   ``--env-file``);
2. the baseline: the API's answers (``/api/devices`` and ``/api/latest``: time, median of
   ``--repeat``, and size) and the portal's memory with the lab as it is;
3. one publisher with the fleet account invents ``--devices`` devices over ``--rooms`` rooms
   (one QoS 1 reading each), as fast as the broker takes them;
4. the same answers again, every page of the device list read end to end (what a script that
   wants them all does), and the portal's memory: its peak during the flood, once the flood is
   stored, and after ``--idle`` quiet seconds.

    .venv/bin/python bench/name_flood.py --help

It prints figures; it passes or fails nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlab import lab_instance  # noqa: E402 - bench/ is on sys.path when this runs as a script
from mqtt_wire import RawPublisher  # noqa: E402
from portal_probe import sign_in, worker_rss_mib  # noqa: E402

from labctl.config import LabConfig  # noqa: E402

ANSWERS = [
    ("/api/devices", {}),
    ("/api/devices", {"q": "dev-0042"}),
    ("/api/latest", {}),
]


def answer_figures(session: requests.Session, url: str, repeat: int) -> list[tuple[str, float, int]]:
    """(what, median ms, bytes) of each answer in ANSWERS."""
    figures = []
    for path, params in ANSWERS:
        times, size = [], 0
        for _ in range(repeat):
            started = time.perf_counter()
            response = session.get(f"{url}{path}", params=params, timeout=60)
            times.append((time.perf_counter() - started) * 1000)
            size = len(response.content)
        query = "&".join(f"{key}={value}" for key, value in params.items())
        figures.append((f"{path}{'?' + query if query else ''}", statistics.median(times), size))
    return figures


def read_every_page(session: requests.Session, url: str) -> tuple[int, float, int]:
    """Devices listed, seconds taken, pages read: the whole list, a page of 1,000 at a time."""
    started, count, pages, cursor = time.perf_counter(), 0, 0, None
    while True:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = session.get(f"{url}/api/devices", params=params, timeout=60).json()
        count += len(page["devices"])
        pages += 1
        cursor = page["next"]
        if cursor is None:
            return count, time.perf_counter() - started, pages


def flood(config: LabConfig, rooms: int, devices: int) -> None:
    env = config.env
    publisher = RawPublisher(config.port("MQTT_PORT"), env["LAB_FLEET_USER"], env["LAB_FLEET_PASSWORD"], 1)
    root, per_room = env["TOPIC_ROOT"], devices // rooms
    for room in range(rooms):
        packets = [
            publisher.packet(f"{root}/flood-{room:03d}/dev-{index:05d}/temperature".encode(), b"21.5")
            for index in range(per_room)
        ]
        publisher.send(packets)
    publisher.close(120, rooms * per_room)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-file", type=Path, help="measure the running lab of this .env")
    parser.add_argument("--devices", type=int, default=20_000, help="new device names (default 20000)")
    parser.add_argument("--rooms", type=int, default=20, help="rooms they are spread over (default 20)")
    parser.add_argument("--repeat", type=int, default=10, help="times each answer is asked (default 10)")
    parser.add_argument("--idle", type=float, default=30, help="quiet seconds before the last memory reading")
    args = parser.parse_args()
    with lab_instance(args.env_file, "bench-flood-", services=("db", "mosquitto", "web")) as (config, _lab):
        url = f"http://127.0.0.1:{config.port('PORTAL_PORT')}"
        session, _cookie = sign_in(config)
        time.sleep(1)
        before = answer_figures(session, url, args.repeat)
        rss = {"before": worker_rss_mib(config)}
        known = session.get(f"{url}/api/devices", params={"limit": 1}, timeout=60).json()["total"]
        peak = [rss["before"]]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.25):
                peak.append(worker_rss_mib(config))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        print(f"flooding {args.devices:,} new device names over {args.rooms} rooms ...")
        started = time.perf_counter()
        flood(config, args.rooms, args.devices)
        while (
            session.get(f"{url}/api/devices", params={"limit": 1}, timeout=60).json()["total"]
            < known + args.devices
        ):
            time.sleep(0.2)
        stored_s = time.perf_counter() - started
        after = answer_figures(session, url, args.repeat)
        listed, list_s, pages = read_every_page(session, url)
        sampling.set()
        sampler.join(2)
        rss["peak"] = max(peak)
        rss["stored"] = worker_rss_mib(config)
        time.sleep(args.idle)
        rss["idle"] = worker_rss_mib(config)

    print(f"\n{args.devices:,} new devices stored {stored_s:.1f} s after the flood began\n")
    print(f"{'answer':32} {'before ms':>10} {'bytes':>8} {'after ms':>10} {'bytes':>8}")
    for (what, ms_before, size_before), (_what, ms_after, size_after) in zip(before, after, strict=True):
        print(f"{what:32} {ms_before:>10.1f} {size_before:>8,} {ms_after:>10.1f} {size_after:>8,}")
    print(f"every device listed, {pages} pages of 1,000: {listed:,} devices in {list_s * 1000:.0f} ms")
    print(
        f"portal memory (RSS, MiB): before {rss['before']:.0f}, peak {rss['peak']:.0f}, "
        f"stored {rss['stored']:.0f}, after {args.idle:g} s idle {rss['idle']:.0f} "
        f"({(rss['idle'] - rss['before']) * 1024 / args.devices:.2f} KiB per device kept)"
    )


if __name__ == "__main__":
    main()
