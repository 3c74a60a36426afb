"""One client never hurts the others: frozen and stalled viewers beside 20 normal ones.

A laptop that goes to sleep with the overview open stops reading its socket and stops answering
pings; so does a client that simply stops reading. Against the session's lab (the real portal
under gunicorn's gevent worker), with a publisher feeding a watched room and a heavy room:

* 20 normal viewers watch the room for a baseline;
* then a viewer in its own process, frozen with SIGSTOP, and a viewer that never reads join them,
  both subscribed to the whole site; the normal viewers watch again, past the point where the
  portal gives up on the frozen one (its backlog, or Engine.IO's ping timeout at 45 s).

Live updates must never stop, the normal viewers' p99 latency must stay within 20 % of the
baseline, the portal must drop both bad clients and keep its memory bounded, ``/readyz`` must stay
ready, and a new viewer must still connect. A viewer that reads late gets whole frames.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import requests

from stress.viewers.portal_client import Viewer
from tests.conftest import RunningLab
from tests.mqtt_helpers import connect
from tests.web.live_clients import RawViewer
from tests.web.portal_testing import signed_in_session

pytestmark = pytest.mark.integration

CLIENTS = Path(__file__).resolve().parent / "live_clients.py"
NORMAL_VIEWERS = 20
#: Latency devices publish {"value", "ts"} at this rate each; heavy devices big text values.
DEVICES, PER_DEVICE_HZ = 20, 10
HEAVY_DEVICES, HEAVY_HZ, HEAVY_BYTES = 40, 2, 6000
BASELINE_S = 12.0
#: Past Engine.IO's ping interval plus timeout (25 s + 20 s), where a frozen client used to stop
#: live updates for everyone.
WITH_BAD_CLIENTS_S = 50.0
#: Normal viewers may see no update for this long at most (the watched room changes 200 times a second).
LONGEST_SILENCE_S = 2.0
#: How much the portal's memory may grow while it holds the bad clients.
MEMORY_GROWTH_MAX_KIB = 64 * 1024


class Publisher:
    """Numbered values with their publish time in one room, big text values in another."""

    def __init__(self, lab: RunningLab, room: str, heavy_room: str) -> None:
        self.client = lab.mqtt_client(lab.env["LAB_FLEET_USER"], lab.env["LAB_FLEET_PASSWORD"])
        reason = connect(self.client, lab.port("MQTT_PORT"))
        assert not reason.is_failure, reason
        self.room, self.heavy_room = room, heavy_room
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sequence = 0
        tick = 1 / PER_DEVICE_HZ
        next_at = time.monotonic()
        filler = "x" * HEAVY_BYTES
        while not self._stop.is_set():
            now_ms = int(time.time() * 1000)
            for device in range(DEVICES):
                payload = json.dumps({"value": sequence, "ts": now_ms})
                self.client.publish(f"office/{self.room}/d{device}/seq", payload)
                sequence += 1
            if sequence % (DEVICES * PER_DEVICE_HZ // HEAVY_HZ) < DEVICES:
                for device in range(HEAVY_DEVICES):
                    self.client.publish(f"office/{self.heavy_room}/h{device}/blob", f"{sequence}{filler}")
            next_at += tick
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.loop_stop()
        self.client.disconnect()


class Audience:
    """Normal viewers of one room in a thread of their own; latency and arrivals are recorded."""

    def __init__(self, portal_url: str, cookie: str, room: str, count: int) -> None:
        self.portal_url, self.cookie, self.room, self.count = portal_url, cookie, room, count
        self.samples: list[tuple[float, float]] = []  # (arrival, latency ms)
        self.connected = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._main(),), daemon=True
        )
        self._stop: asyncio.Event | None = None
        self._thread.start()
        assert self.connected.wait(30), "the normal viewers did not connect"

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with aiohttp.ClientSession() as session:
            viewers = [
                Viewer(
                    self.portal_url,
                    self._on_event,
                    headers={"Cookie": self.cookie},
                    auth={"scopes": [{"scope": "room", "room": self.room}]},
                )
                for _ in range(self.count)
            ]
            for viewer in viewers:
                await viewer.connect(session)
            tasks = [asyncio.create_task(viewer.listen()) for viewer in viewers]
            self.connected.set()
            await self._stop.wait()
            for viewer in viewers:
                await viewer.close()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _on_event(self, name: str, data: object) -> None:
        if name != "values" or not isinstance(data, list):
            return
        now = time.time()
        for item in data:
            self.samples.append((now, now * 1000 - item["ts"]))

    def window(self, start: float, end: float) -> list[tuple[float, float]]:
        return [sample for sample in self.samples if start <= sample[0] < end]

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def p99(samples: list[tuple[float, float]]) -> float:
    latencies = sorted(latency for _at, latency in samples)
    assert latencies, "no updates at all"
    return latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]


def longest_silence(samples: list[tuple[float, float]], start: float, end: float) -> float:
    moments = [start, *sorted(at for at, _latency in samples), end]
    return max(b - a for a, b in itertools.pairwise(moments))


def portal_worker_rss_kib(lab: RunningLab) -> int:
    """VmRSS of the gunicorn worker (the child of the recorded portal process)."""
    master = lab.lab.table.pid("web")
    assert master is not None, "the portal is not running"
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert children, "the portal has no worker"
    for line in Path(f"/proc/{children[0]}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def metric(lab: RunningLab, session: requests.Session, name: str) -> float:
    text = session.get(f"{lab.portal_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "_total "):
            return float(line.split()[-1])
    raise AssertionError(f"no metric {name}")


@pytest.fixture
def signed_in(lab: RunningLab) -> tuple[requests.Session, str]:
    session = signed_in_session(
        lab.portal_url, lab.env["PORTAL_ADMIN_USER"], lab.env["PORTAL_ADMIN_PASSWORD"]
    )
    cookie = "; ".join(f"{name}={value}" for name, value in session.cookies.items())
    return session, cookie


@pytest.fixture
def frozen_process(
    lab: RunningLab, signed_in: tuple[requests.Session, str]
) -> Iterator[subprocess.Popen[str]]:
    """A viewer of the whole site in its own process, subscribed, then stopped like a sleeping laptop."""
    _session, cookie = signed_in
    process = subprocess.Popen(
        [sys.executable, str(CLIENTS), lab.portal_url, cookie, '[{"scope": "site"}]'],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "subscribed"
        yield process
    finally:
        process.kill()  # also wakes it if stopped
        process.wait(10)


def test_frozen_and_stalled_viewers_do_not_hurt_the_others(
    lab: RunningLab,
    unique_room: str,
    signed_in: tuple[requests.Session, str],
    frozen_process: subprocess.Popen[str],
) -> None:
    session, cookie = signed_in
    publisher = Publisher(lab, unique_room, unique_room + "-heavy")
    audience = Audience(lab.portal_url, cookie, unique_room, NORMAL_VIEWERS)
    stalled: RawViewer | None = None
    try:
        time.sleep(2)  # let the first snapshots and the publisher's rhythm settle
        start = time.time()
        time.sleep(BASELINE_S)
        baseline = audience.window(start, time.time())
        dropped_before = metric(lab, session, "portal_live_dropped")
        rss_before = portal_worker_rss_kib(lab)

        os.kill(frozen_process.pid, signal.SIGSTOP)
        stalled = RawViewer(lab.portal_url, cookie, [{"scope": "site"}], receive_buffer=4096)
        start = time.time()
        rss_peak = rss_before
        while time.time() - start < WITH_BAD_CLIENTS_S:
            time.sleep(1)
            rss_peak = max(rss_peak, portal_worker_rss_kib(lab))
            ready = requests.get(f"{lab.portal_url}/readyz", timeout=5)
            assert ready.status_code == 200, ready.text
        end = time.time()
        with_bad = audience.window(start, end)

        assert longest_silence(with_bad, start, end) < LONGEST_SILENCE_S, "live updates stopped"
        base_p99, bad_p99 = p99(baseline), p99(with_bad)
        assert bad_p99 <= 1.2 * base_p99, f"p99 {bad_p99:.0f} ms with bad clients, {base_p99:.0f} ms without"
        assert metric(lab, session, "portal_live_dropped") - dropped_before >= 2, "both bad clients dropped"
        assert rss_peak - rss_before < MEMORY_GROWTH_MAX_KIB, f"portal grew by {rss_peak - rss_before} KiB"

        late = RawViewer(lab.portal_url, cookie, [{"scope": "room", "room": unique_room}])
        events = late.events(late.read(3.0))
        late.close()
        assert any(name == "snapshot" for name, _data in events), "a new viewer gets its snapshot"
        assert any(name == "values" for name, _data in events), "and live values"
    finally:
        if stalled is not None:
            stalled.close()
        audience.stop()
        publisher.stop()


def test_a_viewer_that_reads_late_gets_whole_frames(
    lab: RunningLab, unique_room: str, signed_in: tuple[requests.Session, str]
) -> None:
    """Frames queued while a client did not read arrive whole once it reads again (or the
    connection ends cleanly); never a truncated frame followed by garbage."""
    _session, cookie = signed_in
    publisher = Publisher(lab, unique_room, unique_room + "-heavy")
    late = RawViewer(lab.portal_url, cookie, [{"scope": "site"}], receive_buffer=4096)
    try:
        time.sleep(8)  # the portal's socket buffer fills while this client does not read
        frames = late.read(10.0)  # FrameError on any malformed frame
        assert late.events(frames), "it got events"
    finally:
        late.close()
        publisher.stop()
