"""The run folder: ``timeseries.csv`` and ``events.jsonl`` as the run goes, ``summary.json`` at the end.

Files are written incrementally (one row per second, one line per event), so a run that is
killed outright still leaves everything up to its last second on disk.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import IO, Any

from stress.measure.meter import Event, Second
from stress.results.model import COLUMNS, Row

DEFAULT_ROOT = Path("data/runs")

#: One encoder for every event line (``json.dumps`` with options builds a new one per call).
_event_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def new_run_id(target: str, devices: int) -> str:
    """``YYYYmmdd-HHMMSS-<target>-<devices>`` (UTC)."""
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{target}-{devices}"


class RunFolder:
    """Writes one run's folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=False)
        self._events = (path / "events.jsonl").open("w", encoding="utf-8")
        self._series_file = (path / "timeseries.csv").open("w", newline="", encoding="utf-8")
        self._series = csv.writer(self._series_file)
        self._series.writerow(COLUMNS)
        self._workers: Any = None  # workers.csv, opened by the first worker's second
        self._workers_file: IO[str] | None = None

    @classmethod
    def create(cls, out: Path | None, run_id: str) -> RunFolder:
        """``out`` itself when given (it must not exist yet, or be empty), else ``data/runs/<run-id>``."""
        if out is not None:
            if out.exists() and (not out.is_dir() or any(out.iterdir())):
                raise FileExistsError(f"--out {out} exists and is not an empty folder: choose a new one")
            if out.exists():
                out.rmdir()
            return cls(out)
        path = DEFAULT_ROOT / run_id
        suffix = 1
        while path.exists():
            suffix += 1
            path = DEFAULT_ROOT / f"{run_id}-{suffix}"
        return cls(path)

    def event(self, event: Event) -> None:
        """Append one event line (device names and reasons are stored as given: JSON escapes them)."""
        self._events.write(_event_json(event) + "\n")

    def second(self, second: Second) -> None:
        """Append one row, and the per-second error counts as ``errors`` events."""
        self._series.writerow(Row.of(second).cells())
        self._series_file.flush()
        for (stage, reason), count in second.errors.items():
            self.event({"t": second.t, "event": "errors", "stage": stage, "reason": reason, "count": count})
        self._events.flush()

    def worker_second(self, worker: str, second: Second) -> None:
        """One worker's own second, before the merge, as a row of ``workers.csv`` (cluster runs)."""
        if self._workers_file is None:
            self._workers_file = (self.path / "workers.csv").open("w", newline="", encoding="utf-8")
            self._workers = csv.writer(self._workers_file)
            self._workers.writerow(("worker", *COLUMNS, "errors"))
        self._workers.writerow((worker, *Row.of(second).cells(), sum(second.errors.values())))
        self._workers_file.flush()

    def finish(self, summary: dict[str, Any]) -> Path:
        """Write ``summary.json`` (atomically) and close the files."""
        self.close()
        target = self.path / "summary.json"
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        temporary.replace(target)
        return target

    def close(self) -> None:
        """Close the streaming files (idempotent)."""
        if not self._events.closed:
            self._events.close()
        if not self._series_file.closed:
            self._series_file.close()
        if self._workers_file is not None and not self._workers_file.closed:
            self._workers_file.close()
