"""The overview page in Chromium: time to first values and long tasks at 10,000 devices, 5,000 msg/s.

One run, on this machine:

1. a lab instance (database, broker, portal; its own on free ports, or a running one with
   ``--env-file``);
2. the project's simulator, ``stress run``, drives ``--devices`` thermostats at ``--rate``
   messages per second in all (each publishes its three attributes every ``3 * devices / rate``
   seconds: 6 s by default), until the portal knows every one of them;
3. Chromium (Playwright), signed in through /login, loads each view of the overview (tiles ``/``,
   the table ``/?view=table``, the table with the longest silent first
   ``/?view=table&sort=offline``) ``--loads`` times, each in a new browser context (a cold cache),
   and measures the time from the start of the navigation until the first device of the page
   shows a value and until all 48 do, and the page's long tasks (over 50 ms) while it loads; the
   first ``--watched`` loads of a view then stay open ``--window`` seconds with the live values
   flowing (long tasks, value updates the page applied) and click Next ``--clicks`` times (time
   until the next page's values show);
4. the baseline: the fleet stopped, the same loads of the idle lab with the same devices.

The page is measured from the inside (``overview_probe.js``, installed before the page's own
scripts): ``performance.now()`` of the DOM change that put the values in, Navigation and Resource
Timing of its requests, PerformanceObservers of long tasks and of long animation frames (a long
task with the style, layout and paint that follow it, which a long task entry leaves out, and the
script that ran it), a MutationObserver counting value updates.

    .venv/bin/python bench/overview.py --help

It prints figures and, beside the targets (first values in under 2 s; no long task over 100 ms
with the fleet running), whether they were met; the exit status does not depend on them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import Error as PlaywrightError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlab import lab_instance  # noqa: E402 - bench/ is on sys.path when this runs as a script
from portal_probe import sign_in  # noqa: E402
from profiling import cpu_usage  # noqa: E402

from labctl.config import LabConfig  # noqa: E402

#: Devices on one page of the overview (``PAGE_SIZE`` in web/static/live.js).
PAGE_SIZE = 48
#: Messages a thermostat sends per interval: one per attribute (temperature, humidity, setpoint).
MESSAGES_PER_DEVICE = 3
#: Device names of the fleet: ``dev00001``, ... (stress's default), over stress's 10 rooms.
DEVICE_PREFIX = "dev"
#: The first values and the long tasks the requirement allows.
TARGET_FIRST_MS = 2000.0
TARGET_LONG_TASK_MS = 100.0
#: Chromium as tests/e2e/conftest.py launches it (no browser download works here).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}
#: Time a page is given to show its values before the load counts as failed.
VALUES_TIMEOUT_MS = 30_000
#: Time a page stays open after its values showed, so that the tasks that follow are recorded.
SETTLE_MS = 1000
PROBE = (Path(__file__).resolve().parent / "overview_probe.js").read_text(encoding="utf-8")


@dataclass(frozen=True)
class View:
    """One way of showing the overview."""

    name: str
    path: str


VIEWS = (
    View("tiles", "/"),
    View("table", "/?view=table"),
    View("table, offline first", "/?view=table&sort=offline"),
)


@dataclass(frozen=True)
class Frame:
    """A long animation frame: its longest task with the style, layout and paint after it (ms)."""

    busy: float  # that task and its rendering: blockingDuration + 50 ms
    rendering: float  # the style, layout and paint
    script: float  # the longest script in it
    source: str  # that script's invoker and file


@dataclass
class Blocking:
    """The long tasks (over 50 ms) and long animation frames of one stage of a view's loads."""

    tasks: list[float] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)

    def add(self, other: Blocking) -> None:
        self.tasks += other.tasks
        self.frames += other.frames


@dataclass
class ViewFigures:
    """What the loads of one view measured in one phase (times in ms)."""

    first_ms: list[float] = field(default_factory=list)
    all_ms: list[float] = field(default_factory=list)
    html_ms: list[float] = field(default_factory=list)  # the page's HTML received
    asked_ms: list[float] = field(default_factory=list)  # GET /api/devices sent
    answered_ms: list[float] = field(default_factory=list)  # and its answer received
    tasks_per_load: list[float] = field(default_factory=list)
    loading: Blocking = field(default_factory=Blocking)  # from navigation until settled
    live: Blocking = field(default_factory=Blocking)  # in the watched windows
    window_s: float = 0.0
    windows: int = 0
    updates: int = 0
    next_first_ms: list[float] = field(default_factory=list)
    next_all_ms: list[float] = field(default_factory=list)
    next_answered_ms: list[float] = field(default_factory=list)
    after_next: Blocking = field(default_factory=Blocking)
    failed: list[str] = field(default_factory=list)  # loads or clicks whose values never showed
    errors: list[str] = field(default_factory=list)  # JavaScript errors of the page

    def stages(self) -> dict[str, Blocking]:
        return {"loading": self.loading, "live windows": self.live, "after Next": self.after_next}


@dataclass
class Phase:
    """One pass over the views: with the fleet running or stopped."""

    name: str
    views: dict[str, ViewFigures] = field(default_factory=dict)
    ingest_per_s: float = 0.0
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    busy_cores: float = 0.0  # the whole machine's


# -- the lab and the fleet -------------------------------------------------------------------


class Portal:
    """The portal's answers this benchmark needs, through a signed-in session."""

    def __init__(self, config: LabConfig) -> None:
        self.url = f"http://127.0.0.1:{config.port('PORTAL_PORT')}"
        self.session, _cookie = sign_in(config)

    def fleet_devices(self) -> int:
        """How many of the fleet's devices the portal knows."""
        answer = self.session.get(
            f"{self.url}/api/devices", params={"limit": 1, "prefix": DEVICE_PREFIX}, timeout=30
        )
        answer.raise_for_status()
        return int(answer.json()["total"])

    def ingested(self) -> float:
        """``portal_ingest_messages_total``: the telemetry messages the portal has accepted."""
        text = self.session.get(f"{self.url}/metrics", timeout=30).text
        found = re.search(r"^portal_ingest_messages_total (\S+)$", text, re.MULTILINE)
        if found is None:
            raise SystemExit(f"{self.url}/metrics has no portal_ingest_messages_total")
        return float(found.group(1))

    def wait_quiet(self, timeout_s: float = 60.0) -> None:
        """Wait until the portal has stored what was sent: its ingest count still for 3 s."""
        deadline, last, still_since = time.monotonic() + timeout_s, -1.0, time.monotonic()
        while time.monotonic() < deadline:
            count = self.ingested()
            if count != last:
                last, still_since = count, time.monotonic()
            elif time.monotonic() - still_since >= 3:
                return
            time.sleep(0.5)


class Fleet:
    """``stress run`` against the lab, in a session of its own (Ctrl-C here stops it in order)."""

    def __init__(
        self, config: LabConfig, folder: Path, devices: int, interval: float, duration: float
    ) -> None:
        self.folder = folder
        self.argv = [
            sys.executable, "-m", "stress", "run",
            "--target", "lab", "--env-file", str(config.env_file),
            "--devices", str(devices), "--interval", f"{interval:g}", "--duration", f"{duration:.0f}",
            "--prefix", DEVICE_PREFIX, "--quiet", "--e2e-devices", "0", "--out", str(folder / "run"),
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        environment = {**os.environ, "STRESS_CONTROL_DIR": str(self.folder / "control")}
        with (self.folder / "stress.log").open("wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check(self) -> None:
        """Stop the benchmark, with the simulator's last words, when it has ended by itself."""
        if self.process is not None and self.process.poll() is not None:
            tail = (self.folder / "stress.log").read_text(errors="replace").strip().splitlines()[-5:]
            raise SystemExit(f"stress run ended early (exit {self.process.returncode}): " + " / ".join(tail))

    def stop(self) -> dict[str, Any] | None:
        """End the run as Ctrl-C does (its summary written); its summary, when there is one."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
        try:
            summary: dict[str, Any] = json.loads((self.folder / "run" / "summary.json").read_text())
        except (OSError, ValueError):
            return None
        return summary


def wait_for_fleet(portal: Portal, fleet: Fleet, devices: int, timeout_s: float = 240.0) -> float:
    """Wait until the portal knows every device of the fleet; seconds it took."""
    started = time.monotonic()
    while (known := portal.fleet_devices()) < devices:
        fleet.check()
        if time.monotonic() - started > timeout_s:
            raise SystemExit(f"the portal knows {known:,} of the {devices:,} devices after {timeout_s:.0f} s")
        time.sleep(1)
    return time.monotonic() - started


# -- the page ----------------------------------------------------------------------------------


def signed_in_state(browser: Browser, url: str, config: LabConfig) -> dict[str, Any]:
    """The cookies of a session signed in through the /login form, for new browser contexts."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.goto(f"{url}/login?next=/")
        page.fill("input[name=username]", config.env["PORTAL_ADMIN_USER"])
        page.fill("input[name=password]", config.env["PORTAL_ADMIN_PASSWORD"])
        page.click("button[type=submit]")
        page.wait_for_url(lambda address: "/login" not in address, timeout=15_000)
        state: dict[str, Any] = context.storage_state()  # type: ignore[assignment]
        return state
    finally:
        context.close()


def wait_values(page: Page) -> dict[str, Any] | None:
    """The probe's watch once all the page's devices show a value; None after VALUES_TIMEOUT_MS."""
    try:
        page.wait_for_function(
            "() => window.__overview !== undefined && window.__overview.watch.all !== null",
            polling=50,
            timeout=VALUES_TIMEOUT_MS,
        )
    except PlaywrightError:
        return None
    page.wait_for_timeout(SETTLE_MS)
    watch: dict[str, Any] = page.evaluate("window.__overview.timings()")
    return watch


def blocking(page: Page, since: float, until: float = float("inf")) -> Blocking:
    """The page's long tasks and long animation frames that began between ``since`` and ``until``."""
    tasks, frames = page.evaluate("[window.__overview.longTasks, window.__overview.frames]")
    return Blocking(
        [duration for start, duration in tasks if since <= start < until],
        [Frame(*frame[1:]) for frame in frames if since <= frame[0] < until],
    )


def watch_live(page: Page, seconds: float, figures: ViewFigures) -> None:
    """Keep the page open ``seconds``: its long tasks, and the value updates it applied."""
    start: float = page.evaluate("window.__overview.count()")
    page.wait_for_timeout(seconds * 1000)
    end, updates = page.evaluate("window.__overview.stop()")
    figures.live.add(blocking(page, start, end))
    figures.window_s += (end - start) / 1000
    figures.windows += 1
    figures.updates += updates


def click_next(page: Page, clicks: int, figures: ViewFigures) -> None:
    """Click Next ``clicks`` times: how long until each next page's devices show values."""
    for _ in range(clicks):
        page.evaluate("window.__overview.next()")
        watch = wait_values(page)
        if watch is None:
            figures.failed.append("Next: no values")
            return
        figures.next_first_ms.append(watch["first"])
        figures.next_all_ms.append(watch["all"])
        if watch["answered"] is not None:
            figures.next_answered_ms.append(watch["answered"])
        figures.after_next.add(blocking(page, watch["since"]))


def measure_view(
    browser: Browser, state: dict[str, Any], url: str, view: View, args: argparse.Namespace
) -> ViewFigures:
    """``args.loads`` loads of one view, each in a new browser context."""
    figures = ViewFigures()
    for index in range(args.loads):
        context = browser.new_context(storage_state=state, viewport=VIEWPORT)  # type: ignore[arg-type]
        try:
            context.add_init_script(script=f"window.__overviewPageSize = {PAGE_SIZE};\n{PROBE}")
            page = context.new_page()
            page.on("pageerror", lambda error: figures.errors.append(str(error)))
            page.goto(url + view.path, wait_until="commit")
            watch = wait_values(page)
            if watch is None:
                figures.failed.append(f"load {index + 1}: no values in {VALUES_TIMEOUT_MS / 1000:.0f} s")
                continue
            figures.first_ms.append(watch["first"])
            figures.all_ms.append(watch["all"])
            if watch["asked"] is not None:
                figures.html_ms.append(watch["html"])
                figures.asked_ms.append(watch["asked"])
                figures.answered_ms.append(watch["answered"])
            loading = blocking(page, 0.0)
            figures.tasks_per_load.append(len(loading.tasks))
            figures.loading.add(loading)
            if index < args.watched:
                watch_live(page, args.window, figures)
                click_next(page, args.clicks, figures)
        finally:
            context.close()
    return figures


def measure_phase(
    name: str, browser: Browser, state: dict[str, Any], portal: Portal, args: argparse.Namespace
) -> Phase:
    """Every view, measured once each, with the portal's ingest rate and the CPU used meanwhile."""
    phase = Phase(name)
    print(f"measuring the overview, {name} ...")
    count, started, ticks = portal.ingested(), time.monotonic(), cpu_ticks()
    with cpu_usage(phase.cpu):
        for view in VIEWS:
            phase.views[view.name] = measure_view(browser, state, portal.url, view, args)
            print(f"  {view.name}: done")
    phase.seconds = time.monotonic() - started
    phase.ingest_per_s = (portal.ingested() - count) / phase.seconds
    busy, total = (now - before for now, before in zip(cpu_ticks(), ticks, strict=True))
    phase.busy_cores = (os.cpu_count() or 1) * busy / max(total, 1)
    return phase


def cpu_ticks() -> tuple[int, int]:
    """The machine's busy and total CPU time so far, in ticks (/proc/stat)."""
    user, nice, system, idle, iowait, *others = map(int, Path("/proc/stat").read_text().split()[1:9])
    return user + nice + system + sum(others), user + nice + system + idle + iowait + sum(others)


# -- report ------------------------------------------------------------------------------------


def median_max(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):,.0f} / {max(values):,.0f}"


def ratio(idle: list[float], live: list[float]) -> str:
    if not idle or not live or statistics.median(idle) == 0:
        return "-"
    return f"{statistics.median(live) / statistics.median(idle):.2f}"


def ratio_of(idle: float, live: float) -> str:
    return f"{live / idle:.2f}" if idle else "-"


def longest(tasks: list[float]) -> str:
    return f"{max(tasks):,.0f}" if tasks else "none"


def over(tasks: list[float], limit: float) -> int:
    return sum(1 for task in tasks if task > limit)


LONGEST = "  longest long task / with its rendering, ms"


def task_and_frame(stage: Blocking) -> str:
    """The longest long task, and the longest with the rendering that followed it, of a stage."""
    return f"{longest(stage.tasks)} / {longest([frame.busy for frame in stage.frames])}"


def view_rows(idle: ViewFigures, live: ViewFigures) -> list[tuple[str, str, str, str]]:
    """(what, idle, live, ratio) rows of one view."""

    def time_over_50(stage: Blocking) -> str:
        return f"{sum(task - 50 for task in stage.tasks):,.0f}"

    def frames_over(stage: Blocking) -> str:
        return str(over([frame.busy for frame in stage.frames], TARGET_LONG_TASK_MS))

    def per_s(figures: ViewFigures) -> float:
        return figures.updates / figures.window_s if figures.window_s else 0.0

    window = f"{live.windows} x {live.window_s / max(live.windows, 1):.0f} s"
    limit = f"{TARGET_LONG_TASK_MS:.0f} ms"
    return [
        ("first value shown, ms (median / max)", median_max(idle.first_ms), median_max(live.first_ms),
         ratio(idle.first_ms, live.first_ms)),
        (f"all {PAGE_SIZE} devices shown, ms", median_max(idle.all_ms), median_max(live.all_ms),
         ratio(idle.all_ms, live.all_ms)),
        ("  the page's HTML received, ms", median_max(idle.html_ms), median_max(live.html_ms),
         ratio(idle.html_ms, live.html_ms)),
        ("  GET /api/devices sent, ms", median_max(idle.asked_ms), median_max(live.asked_ms),
         ratio(idle.asked_ms, live.asked_ms)),
        ("  GET /api/devices answered, ms", median_max(idle.answered_ms), median_max(live.answered_ms),
         ratio(idle.answered_ms, live.answered_ms)),
        ("loading: long tasks per load (median / max)", median_max(idle.tasks_per_load),
         median_max(live.tasks_per_load), ""),
        (LONGEST, task_and_frame(idle.loading), task_and_frame(live.loading), ""),
        (f"live window ({window}): long tasks", str(len(idle.live.tasks)), str(len(live.live.tasks)), ""),
        (LONGEST, task_and_frame(idle.live), task_and_frame(live.live), ""),
        ("  long tasks' time over 50 ms, ms", time_over_50(idle.live), time_over_50(live.live), ""),
        (f"  long tasks over {limit}", str(over(idle.live.tasks, TARGET_LONG_TASK_MS)),
         str(over(live.live.tasks, TARGET_LONG_TASK_MS)), ""),
        (f"  with their rendering, over {limit}", frames_over(idle.live), frames_over(live.live), ""),
        ("  value updates applied, per s", f"{per_s(idle):,.1f}", f"{per_s(live):,.1f}",
         ratio_of(per_s(idle), per_s(live))),
        ("Next: first value of the next page, ms", median_max(idle.next_first_ms),
         median_max(live.next_first_ms), ratio(idle.next_first_ms, live.next_first_ms)),
        (f"Next: all {PAGE_SIZE} devices shown, ms", median_max(idle.next_all_ms),
         median_max(live.next_all_ms), ratio(idle.next_all_ms, live.next_all_ms)),
        ("  GET /api/devices answered, ms", median_max(idle.next_answered_ms),
         median_max(live.next_answered_ms), ratio(idle.next_answered_ms, live.next_answered_ms)),
        (LONGEST, task_and_frame(idle.after_next), task_and_frame(live.after_next), ""),
    ]  # fmt: skip


def print_report(
    args: argparse.Namespace, idle: Phase, live: Phase, summary: dict[str, Any] | None, known_s: float
) -> None:
    sent = f"; stress sent {summary['msgs_per_s']:,.0f} msg/s over its run" if summary else ""
    print(
        f"\n{args.devices:,} devices ({MESSAGES_PER_DEVICE} messages every {interval_s(args):g} s each), "
        f"all known to the portal {known_s:.0f} s after the fleet started{sent}"
    )
    print(
        f"the portal ingested {live.ingest_per_s:,.0f} msg/s while the live loads ran "
        f"({live.seconds:.0f} s), {idle.ingest_per_s:,.0f} msg/s during the idle ones ({idle.seconds:.0f} s)"
    )
    print(
        f"{args.loads} loads of each view (a new browser context each); the first {args.watched} kept open "
        f"{args.window:g} s, then Next clicked {args.clicks} times; ms from the start of the navigation\n"
    )
    width = 44
    print(f"{'':{width}} {'idle lab':>16} {'fleet running':>16} {'ratio':>7}")
    for view in VIEWS:
        print(f"{view.name} ({view.path})")
        for what, idle_text, live_text, share in view_rows(idle.views[view.name], live.views[view.name]):
            print(f"  {what:{width - 2}} {idle_text:>16} {live_text:>16} {share:>7}")
    for phase in (idle, live):
        for view, figures in phase.views.items():
            for problem in figures.failed:
                print(f"{phase.name}, {view}: {problem}")
            if figures.errors:
                first = figures.errors[0]
                print(f"{phase.name}, {view}: {len(figures.errors)} JavaScript errors, first: {first}")
    print(
        f"\ncores busy (the whole machine's {os.cpu_count()}, any program): {live.busy_cores:.2f} while the "
        f"live loads ran, {idle.busy_cores:.2f} during the idle ones"
    )
    print(f"CPU seconds by program, fleet running ({live.seconds:.0f} s):")
    programs = [(name, seconds) for name, seconds in live.cpu.items() if not name.startswith("(")]
    busiest = sorted(programs, key=lambda item: -item[1])
    print("  " + ", ".join(f"{name} {seconds:.0f}" for name, seconds in busiest[:7]))
    print_verdict(live)


def print_verdict(live: Phase) -> None:
    """The requirement's two targets, from the loads with the fleet running."""
    first = [ms for figures in live.views.values() for ms in figures.all_ms]
    failed = sum(len(figures.failed) for figures in live.views.values())
    met_first = bool(first) and max(first) < TARGET_FIRST_MS and failed == 0
    merged: dict[str, Blocking] = {}
    worst: tuple[Frame, str, str] | None = None  # the busiest frame, its view and its stage
    for view, figures in live.views.items():
        for name, stage in figures.stages().items():
            merged.setdefault(name, Blocking()).add(stage)
            for frame in stage.frames:
                if worst is None or frame.busy > worst[0].busy:
                    worst = (frame, view, name)
    limit = TARGET_LONG_TASK_MS
    too_long = sum(over(stage.tasks, limit) for stage in merged.values())
    print("\ntargets, fleet running:")
    print(
        f"  first values < {TARGET_FIRST_MS / 1000:g} s: slowest load showed all {PAGE_SIZE} devices in "
        f"{max(first, default=float('nan')):,.0f} ms{f', {failed} never' if failed else ''}: "
        f"{'met' if met_first else 'MISSED'}"
    )
    counts = "; ".join(
        f"{name} {over(stage.tasks, limit)} of {len(stage.tasks)} (longest {longest(stage.tasks)} ms)"
        for name, stage in merged.items()
    )
    print(f"  no long task > {limit:.0f} ms: {counts}: {'met' if too_long == 0 else 'MISSED'}")
    frames = "; ".join(
        f"{name} {over([frame.busy for frame in stage.frames], limit)}" for name, stage in merged.items()
    )
    print(f"  beside it, long tasks with the rendering after them > {limit:.0f} ms: {frames}")
    if worst is not None:
        frame, view, name = worst
        print(
            f"  the longest, {frame.busy:.0f} ms ({view}, {name}): script {frame.script:.0f} ms, "
            f"{frame.source or 'none'}; style, layout and paint {frame.rendering:.0f} ms"
        )


# -- the run -----------------------------------------------------------------------------------


def interval_s(args: argparse.Namespace) -> float:
    """Seconds between a device's messages that make ``args.rate`` msg/s over the fleet."""
    return MESSAGES_PER_DEVICE * args.devices / args.rate


def fleet_duration_s(args: argparse.Namespace) -> float:
    """Long enough for the wait and the live pass, with margin; the fleet is stopped before."""
    per_view = args.loads * 10 + args.watched * (args.window + 5 * args.clicks + 10)
    return 300 + 3 * len(VIEWS) * per_view


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-file", type=Path, help="measure the running lab of this .env")
    parser.add_argument("--keep", action="store_true", help="keep the lab's folder and the stress run")
    parser.add_argument("--devices", type=int, default=10_000, help="simulated devices (default 10000)")
    parser.add_argument("--rate", type=float, default=5000, help="messages per second in all (default 5000)")
    parser.add_argument("--loads", type=int, default=5, help="loads of each view in each phase (default 5)")
    parser.add_argument("--watched", type=int, default=2, help="loads of a view kept open live (default 2)")
    parser.add_argument(
        "--window", type=float, default=20, help="seconds a watched load stays open (default 20)"
    )
    parser.add_argument("--clicks", type=int, default=3, help="Next clicks after each window (default 3)")
    args = parser.parse_args()
    if args.devices < PAGE_SIZE * (args.clicks + 1):
        parser.error(f"--devices must fill {args.clicks + 1} pages of {PAGE_SIZE}")
    if args.rate <= 0 or args.loads < 1 or not 0 <= args.watched <= args.loads:
        parser.error("--rate must be positive, --loads at least 1, --watched at most --loads")
    return args


@contextlib.contextmanager
def lab_for(args: argparse.Namespace) -> Iterator[LabConfig]:
    """The lab to measure (``benchlab.lab_instance``). A lab started here may keep its services'
    state outside its folder (``/var/lib/iot-lab/<key>/`` when the folder is out of their users'
    reach, see ``LabConfig.state_dir``): that goes too, unless ``--keep``."""
    services = ("db", "mosquitto", "web")
    outside: set[Path] = set()
    instance = lab_instance(args.env_file, "bench-overview-", services=services, keep=args.keep)
    try:
        with instance as (config, lab):
            if lab is not None and not args.keep:
                outside = {link.resolve().parent for link in config.data_dir.iterdir() if link.is_symlink()}
            yield config
    finally:
        for folder in outside:
            shutil.rmtree(folder, ignore_errors=True)


def run(args: argparse.Namespace, folder: Path) -> None:
    """The whole benchmark: the lab, the fleet, the browser, both phases, the report."""
    with lab_for(args) as config, sync_playwright() as playwright:
        portal = Portal(config)
        fleet = Fleet(config, folder, args.devices, interval_s(args), fleet_duration_s(args))
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            state = signed_in_state(browser, portal.url, config)
            print(f"starting {args.devices:,} devices at {args.rate:,.0f} msg/s ...")
            fleet.start()
            known_s = wait_for_fleet(portal, fleet, args.devices)
            time.sleep(interval_s(args))  # one full round of every device's values
            live = measure_phase(f"{args.rate:,.0f} msg/s", browser, state, portal, args)
            fleet.check()
            summary = fleet.stop()
            portal.wait_quiet()
            idle = measure_phase("idle lab", browser, state, portal, args)
        finally:
            fleet.stop()
            with contextlib.suppress(PlaywrightError):  # its driver may be gone (Ctrl-C reaches it too)
                browser.close()
    print_report(args, idle, live, summary, known_s)


def main() -> None:
    args = parse_args()
    interrupted = False

    def interrupt(_number: int, _frame: object) -> None:
        nonlocal interrupted
        interrupted = True
        logging.getLogger("asyncio").disabled = True  # the dead driver's pending reads, not news
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    print(f"load average before the run: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")
    folder = Path(tempfile.mkdtemp(prefix="bench-overview-run-"))
    try:
        run(args, folder)
    except (KeyboardInterrupt, PlaywrightError) as error:
        # Ctrl-C reaches Playwright's driver too, which may fail a call before this process hears of it
        if isinstance(error, PlaywrightError) and not interrupted:
            raise SystemExit(f"the browser failed: {str(error).splitlines()[0]}") from None
        print("interrupted: the stress run, the browser and the lab are stopped", file=sys.stderr)
        raise SystemExit(130) from None
    except requests.RequestException as error:
        raise SystemExit(f"the portal did not answer: {error}") from None
    finally:
        if args.keep:
            print(f"kept the stress run in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
