"""The dashboard's view of runs: the run in progress (watched through its control socket), or a
finished run from its folder when none is in progress: the one ``--run`` names, else the last.

A live run is kept as its last :data:`HISTORY` seconds, its timeline and its errors so far; a
finished one is read whole from its folder (every second, bucketed as the report's charts are
when the run is longer than :data:`~stress.results.report.model.MAX_POINTS` seconds), with its
summary, its timeline, its errors and the address of its report."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stress.control import MAX_REQUEST, RunEntry, SteerError, runs_in_progress, send
from stress.results.buckets import bucket_width, folded_rows
from stress.results.model import RunFileError, RunSummary
from stress.results.timeline import change_json

log = logging.getLogger(__name__)

#: Seconds of a live run a newly opened page gets at once.
HISTORY = 600
#: Failing devices the dashboard keeps (the most errors first).
FAILING_KEPT = 20
#: Seconds between looks for a run to watch.
LOOK_EVERY_S = 0.5
#: Seconds a run that ended has to write its summary before the page is told about it.
SUMMARY_WAIT_S = 30.0

Emit = Callable[[str, Any], None]


class Feed:
    """Watches runs in a thread of its own and hands each message to ``emit(event, data)``."""

    def __init__(self, emit: Emit, runs_root: Path, run: str | None = None) -> None:
        self.emit = emit
        self.runs_root = runs_root
        self.wanted = run
        self.lock = threading.Lock()
        self.live: RunEntry | None = None
        self.status: dict[str, Any] = {}
        self.seconds: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        #: A cluster run's workers, each with its last second (empty for other runs).
        self.workers: list[dict[str, Any]] = []
        self.failing: dict[str, dict[str, Any]] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=200)
        #: The live run's timeline so far, and its errors by (stage, reason) so far.
        self.changes: list[dict[str, Any]] = []
        self.errors: dict[tuple[str, str], int] = {}
        #: Run folders shown, by run id (for their reports), and the last one read, by its
        #: folder and the time its summary was written.
        self.folders: dict[str, Path] = {}
        self._shown: tuple[tuple[Path, int], dict[str, Any]] | None = None
        self._stop = threading.Event()
        self._conn: socket.socket | None = None
        self._thread = threading.Thread(target=self._watch_forever, name="dashboard-feed", daemon=True)

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    # ------------------------------------------------------------------ what a page gets first

    def state(self) -> dict[str, Any]:
        """Everything a page needs when it opens: the live run, or a finished one."""
        with self.lock:
            if self.live is not None:
                return {
                    "live": True,
                    "run": {"run_id": self.live.run_id, "folder": self.live.folder, **self.status},
                    "seconds": list(self.seconds),
                    "failing": self._failing(),
                    "events": list(self.events),
                    "workers": list(self.workers),
                    "timeline": list(self.changes),
                    "errors": self._errors(),
                }
        return {"live": False, **self.finished()}

    def finished(self, folder: Path | None = None) -> dict[str, Any]:
        """A finished run as the page shows it: ``folder``, else the one ``--run`` names among the
        run folders, else the last one (read once for each time its summary is written)."""
        if folder is None:
            named = self._named()
            folder = named if named is not None else last_folder(self.runs_root)
        if folder is None:
            return {"run": None, "seconds": [], "failing": [], "events": []}
        try:
            key = (folder, (folder / "summary.json").stat().st_mtime_ns)
        except OSError:
            key = (folder, -1)
        shown = self._shown
        if shown is not None and shown[0] == key:
            return shown[1]
        state = run_folder(folder)
        if state["run"] is not None:
            with self.lock:
                self.folders[state["run"]["run_id"]] = folder
        self._shown = (key, state)
        return state

    def folder_of(self, run_id: str) -> Path | None:
        """The folder of a run this dashboard showed, or of a run folder under its root."""
        with self.lock:
            known = self.folders.get(run_id)
        if known is not None:
            return known
        candidate = self.runs_root / run_id
        inside = candidate.parent == self.runs_root and run_id not in ("", ".", "..")
        return candidate if inside and (candidate / "summary.json").is_file() else None

    def _named(self) -> Path | None:
        """The run folder ``--run`` names, when it is one under the root."""
        if self.wanted is None:
            return None
        return self.folder_of(self.wanted)

    def _errors(self) -> list[list[Any]]:
        ranked = sorted(self.errors.items(), key=lambda item: (-item[1], item[0]))
        return [[stage, reason, count] for (stage, reason), count in ranked]

    def _failing(self) -> list[dict[str, Any]]:
        ranked = sorted(self.failing.values(), key=lambda entry: -entry["errors"])
        return ranked[:FAILING_KEPT]

    # ------------------------------------------------------------------ controls

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send ``request`` to the live run; its answer (or why it could not be sent)."""
        entry = self.live
        if entry is None:
            return {"ok": False, "error": "no run in progress"}
        try:
            return send(entry, request)
        except SteerError as exc:
            return {"ok": False, "error": str(exc)}

    # ------------------------------------------------------------------ the thread

    def _watch_forever(self) -> None:
        while not self._stop.is_set():
            entry = self._find()
            if entry is None:
                self._stop.wait(LOOK_EVERY_S)
                continue
            try:
                self._watch(entry)
            except (OSError, ValueError) as exc:
                log.info("stopped watching %s: %s", entry.run_id, exc)
            ended = {"run_id": entry.run_id, **self._ended(Path(entry.folder))}
            self.emit("ended", ended)
            with self.lock:  # only now, so that /healthz saying "not live" means pages were told
                self.live = None

    def _ended(self, folder: Path) -> dict[str, Any]:
        """The run that just ended, once its summary is written (the run writes it after it
        closes its control socket)."""
        summary = folder / "summary.json"
        deadline = time.monotonic() + SUMMARY_WAIT_S
        while not summary.exists() and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.05)
        return self.finished(folder if summary.exists() else None)

    def _find(self) -> RunEntry | None:
        runs = runs_in_progress()
        if self.wanted is not None:
            runs = [run for run in runs if self.wanted in (run.run_id, str(run.pid))]
        return runs[-1] if runs else None

    def _watch(self, entry: RunEntry) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(5.0)
            conn.connect(entry.socket)
            conn.sendall(b'{"op": "watch"}\n')
            # Blocking reads from here (a timeout inside a buffered read can lose data): the
            # run closing the connection, or ``stop`` shutting it down, ends the loop
            conn.settimeout(None)
            self._conn = conn
            lines = conn.makefile("rb")
            first = json.loads(lines.readline(MAX_REQUEST) or b"{}")
            if not first.get("ok"):
                return
            with self.lock:
                self.live = entry
                self.status = first["status"]
                self.seconds.clear()
                self.workers = []
                self.failing.clear()
                self.events.clear()
                self.changes = list(first.get("timeline") or [])
                self.errors.clear()
                self.folders[entry.run_id] = Path(entry.folder)
            self.emit("started", self.state())
            while not self._stop.is_set():
                line = lines.readline(MAX_REQUEST)
                if not line:
                    return
                self._take(json.loads(line))

    def _take(self, message: dict[str, Any]) -> None:
        if "workers" in message:
            with self.lock:
                self.workers = message["workers"]
            self.emit("workers", message["workers"])
        elif "second" in message:
            second = message["second"]
            with self.lock:
                self.seconds.append(second)
                for stage, reason, count in second.get("errors", []):
                    self.errors[(stage, reason)] = self.errors.get((stage, reason), 0) + count
            self.emit("second", second)
        elif "change" in message:
            change = message["change"]
            with self.lock:
                last = self.changes[-1] if self.changes else None
                if last is not None and (last["t"], last["what"]) == (change["t"], change["what"]):
                    self.changes[-1] = change  # a storm told again with another process's share
                else:
                    self.changes.append(change)
            self.emit("change", change)
        elif "event" in message:
            event = message["event"]
            with self.lock:
                self.events.append(event)
                if event.get("event") == "error" and event.get("device"):
                    entry = self.failing.setdefault(event["device"], {"device": event["device"], "errors": 0})
                    entry["errors"] += 1
                    entry["reason"] = f"{event.get('stage')}: {event.get('reason')}"
                    entry["t"] = event.get("t")
                failing = self._failing() if event.get("event") == "error" else None
            self.emit("event", event)
            if failing is not None:
                self.emit("failing", failing)


def last_folder(root: Path) -> Path | None:
    """The newest run folder under ``root`` with a summary."""
    folders = [path.parent for path in root.glob("*/summary.json")] if root.is_dir() else []
    if not folders:
        return None
    return max(folders, key=lambda path: (path / "summary.json").stat().st_mtime)


def run_folder(folder: Path) -> dict[str, Any]:
    """A finished run as the page shows it: its summary, what failed it, its timeline, its
    errors, where its report is, and every second (bucketed as the report's charts are, for a
    run longer than they draw point by point), each with its errors counted."""
    from stress.results.report.charts import end_of  # noqa: PLC0415 - the report's reader when shown
    from stress.results.report.loading import load_run  # noqa: PLC0415
    from stress.results.report.model import MAX_POINTS  # noqa: PLC0415

    try:
        run = load_run(folder)
    except RunFileError as exc:
        return {"run": None, "seconds": [], "failing": [], "events": [], "error": str(exc)}
    summary = run.summary
    width = bucket_width(end_of(run), MAX_POINTS)
    errors: dict[int, int] = {}
    for counted in run.events.errors:
        errors[counted.t // width] = errors.get(counted.t // width, 0) + counted.count
    seconds = folded_rows(run.seconds, width)
    for second in seconds:  # errors per second, the mean over the bucket
        second["error_count"] = errors.get(second["t"] // width, 0) / width
    return {
        "run": {
            "run_id": summary.run_id,
            "folder": str(folder),
            "summary": summary.to_json(),
            "problems": list(summary.problems),
            "timeline": [change_json(change) for change in summary.timeline],
            "errors": [[row.stage, row.reason, row.count] for row in summary.errors],
            "report": "report/" + urllib.parse.quote(summary.run_id, safe=""),
            "bucket_s": width,
        },
        "seconds": seconds,
        "failing": [],
        "events": [],
        "workers": _cluster_workers(summary),
    }


def _cluster_workers(summary: RunSummary) -> list[dict[str, Any]]:
    """A finished cluster run's workers, with their whole-run figures, as the page shows them."""
    if summary.cluster is None:
        return []
    lost = set(summary.cluster.lost)
    return [
        {
            "worker": worker.address,
            "sent": worker.sent,
            "connected": worker.connections_peak,
            "errors": worker.errors,
            "cpu_percent": worker.cpu_percent,
            "loop_lag_ms": worker.loop_lag_p99_ms,
            "lost": worker.address in lost,
        }
        for worker in summary.cluster.workers
    ]
