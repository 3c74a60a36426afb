"""Steering a run in progress from another shell: ``stress stop``, ``pause``, ``resume``, ``scale``, ``rate``.

Every run listens on a Unix socket in the control directory (``STRESS_CONTROL_DIR``; else
``$XDG_RUNTIME_DIR/stress``; else ``/tmp/stress-<uid>``), beside a JSON file that says which run
it is: ``<pid>.sock`` and ``<pid>.json``. A command finds the run there, so nobody keeps a PID by
hand: with one run in progress it is that one, with several ``--run`` names it (its run id or
PID). Files of runs that have gone are removed by whoever finds them.

The protocol is a JSON object per line each way: ``{"op": "pause", "devices": ["dev00042"]}``
is answered by ``{"ok": true, "message": "..."}`` or ``{"ok": false, "error": "..."}``. Requests
are validated here, once, whether the run is one process or several (:class:`RunControl`);
the run applies them through its :class:`Controls`, and each one carried out is recorded as a
``control`` event in the run's event path (``events.jsonl``, the watchers, the run's timeline).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stress.errors import StressError
from stress.measure.meter import Event, EventSink, Second
from stress.results.model import Change, Row
from stress.results.timeline import change_json
from stress.scenario import MAX_DEVICES, Scenario, device_name

#: Longest request line a run reads (a pause of many devices fits).
MAX_REQUEST = 4 * 1024 * 1024
#: Devices one pause or resume may name.
MAX_NAMED = 100_000
#: Device names a ``control`` event of a pause or resume lists (its ``count`` says how many).
NAMES_RECORDED = 10


class SteerError(StressError):
    """A command that cannot be carried out; the message is one line saying why."""


def control_dir() -> Path:
    """Where runs in progress leave their sockets (created private to this user)."""
    configured = os.environ.get("STRESS_CONTROL_DIR")
    if configured:
        return Path(configured)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "stress"
    return Path(tempfile.gettempdir()) / f"stress-{os.getuid()}"


class Controls(Protocol):
    """What a run offers to be steered by (the engine in one process, the fleet over several)."""

    def stop(self, reason: str) -> None: ...

    def set_paused(self, indexes: list[int], paused: bool) -> None: ...

    def scale(self, devices: int) -> None: ...

    def set_interval(self, interval: float) -> None: ...

    def connected_count(self) -> int: ...


class RunControl:
    """Validates requests against the run's scenario and keeps what was asked of it.

    Each request carried out is passed to ``record`` as a ``control`` event (``op`` and what it
    asked), stamped with ``clock()``, the seconds since the run's start.
    """

    def __init__(
        self,
        scenario: Scenario,
        run_id: str,
        controls: Controls,
        *,
        record: EventSink | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.scenario = scenario
        self.run_id = run_id
        self.controls = controls
        self.record = record
        self.clock = clock
        #: Devices paused now (indexes), and the fleet size and interval asked by commands.
        self.paused: set[int] = set()
        self.size: int | None = None
        self.interval: float | None = None
        self.stopping = False

    def handle(self, request: Any) -> dict[str, Any]:
        """The answer to one request (never raises for bad input: it says what was wrong)."""
        try:
            if not isinstance(request, dict) or not isinstance(request.get("op"), str):
                raise SteerError('a request is a JSON object with "op"')
            op = request["op"]
            handler = getattr(self, f"_op_{op}", None)
            if handler is None:
                raise SteerError(f"unknown op {op!r} (stop, pause, resume, scale, rate, status, watch)")
            return {"ok": True, **handler(request)}
        except SteerError as exc:
            return {"ok": False, "error": str(exc)}

    # ------------------------------------------------------------------ ops

    def _op_status(self, _request: dict[str, Any]) -> dict[str, Any]:
        return {"status": self.status()}

    def _op_stop(self, _request: dict[str, Any]) -> dict[str, Any]:
        already = self.stopping
        self.stopping = True
        self.controls.stop("stress stop")
        if already:
            return {"message": f"run {self.run_id}: stopping without waiting for acknowledgements"}
        self._record({"op": "stop"})
        return {"message": f"run {self.run_id}: stopping (the summary is written when it has drained)"}

    def _op_pause(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._pause(request, paused=True)

    def _op_resume(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._pause(request, paused=False)

    def _pause(self, request: dict[str, Any], *, paused: bool) -> dict[str, Any]:
        indexes = self.indexes(request.get("devices"))
        if paused:
            self.paused.update(indexes)
        else:
            self.paused.difference_update(indexes)
        self.controls.set_paused(indexes, paused)
        op = "pause" if paused else "resume"
        prefix, fleet = self.scenario.prefix, self.scenario.devices
        named = [device_name(prefix, i, fleet) for i in indexes[:NAMES_RECORDED]]
        self._record({"op": op, "count": len(indexes), "paused": len(self.paused), "devices": named})
        verb = "paused" if paused else "resumed"
        names = self.names(indexes)
        return {"message": f"run {self.run_id}: {verb} {names}; {len(self.paused):,} paused in all"}

    def _op_scale(self, request: dict[str, Any]) -> dict[str, Any]:
        devices = request.get("devices")
        if type(devices) is not int or not 0 <= devices <= MAX_DEVICES:
            raise SteerError(f"scale needs a fleet size of 0..{MAX_DEVICES:,} devices, not {devices!r}")
        self.size = devices
        self.controls.scale(devices)
        self._record({"op": "scale", "devices": devices})
        return {
            "message": f"run {self.run_id}: the fleet becomes {devices:,} devices" + self._until_next_stage()
        }

    def _op_rate(self, request: dict[str, Any]) -> dict[str, Any]:
        interval = request.get("interval")
        if (
            isinstance(interval, bool)
            or not isinstance(interval, (int, float))
            or not math.isfinite(interval)
            or interval < 0
        ):
            raise SteerError(f"rate needs an interval of 0 or more seconds, not {interval!r}")
        self.interval = float(interval)
        self.controls.set_interval(self.interval)
        self._record({"op": "rate", "interval_s": self.interval})
        what = "as fast as the target takes" if interval == 0 else f"every {interval:g} s"
        return {"message": f"run {self.run_id}: each device now publishes {what}" + self._until_next_stage()}

    # ------------------------------------------------------------------ helpers

    def _record(self, request: dict[str, Any]) -> None:
        """One request carried out, as a ``control`` event of the run."""
        if self.record is None:
            return
        event: Event = {"event": "control", **request}
        if self.clock is not None:
            event["t"] = round(self.clock(), 4)
        self.record(event)

    def _until_next_stage(self) -> str:
        return " (until the timeline's next stage)" if len(self.scenario.stages) > 1 else ""

    def limit(self) -> int:
        """Devices a command may name: the largest fleet of the timeline or of a scale."""
        return max(self.scenario.devices, self.size or 0)

    def indexes(self, devices: Any) -> list[int]:
        """The indexes of device ids exactly as in topics; one line naming those that are not."""
        if not isinstance(devices, list) or not devices or not all(isinstance(d, str) for d in devices):
            raise SteerError("name one or more devices, as they appear in topics (such as dev00042)")
        if len(devices) > MAX_NAMED:
            raise SteerError(f"at most {MAX_NAMED:,} devices at once, not {len(devices):,}")
        prefix, fleet, limit = self.scenario.prefix, self.scenario.devices, self.limit()
        found: list[int] = []
        unknown: list[str] = []
        for device in dict.fromkeys(devices):
            digits = device[len(prefix) :] if device.startswith(prefix) else ""
            index = int(digits) - 1 if digits.isdecimal() and digits.isascii() else -1
            if 0 <= index < limit and device_name(prefix, index, fleet) == device:
                found.append(index)
            else:
                unknown.append(device)
        if unknown:
            shown = ", ".join(repr(name) for name in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise SteerError(
                f"not devices of this run: {shown} (its devices are {device_name(prefix, 0, fleet)}"
                f" to {device_name(prefix, limit - 1, fleet)})"
            )
        return found

    def names(self, indexes: list[int]) -> str:
        """``dev00001, dev00002`` (or a count, for many)."""
        if len(indexes) > 5:
            return f"{len(indexes):,} devices"
        return ", ".join(device_name(self.scenario.prefix, i, self.scenario.devices) for i in indexes)

    def status(self) -> dict[str, Any]:
        """What a ``status`` request answers."""
        scenario = self.scenario
        return {
            "run_id": self.run_id,
            "pid": os.getpid(),
            "target": scenario.target,
            "devices": self.size if self.size is not None else scenario.devices,
            "connected": self.controls.connected_count(),
            "interval_s": self.interval,
            "processes": scenario.processes,
            "paused": [device_name(scenario.prefix, i, scenario.devices) for i in sorted(self.paused)[:1000]],
            "paused_count": len(self.paused),
            "stopping": self.stopping,
        }


def live_second(second: Second) -> dict[str, Any]:
    """A closed second as a live view gets it: its :class:`Row`, with the second's errors as
    ``[stage, reason, count]`` and its slowest devices as ``[ms, device]``."""
    return {
        **Row.of(second).to_json(),
        "errors": [[stage, reason, count] for (stage, reason), count in sorted(second.errors.items())],
        "slowest": [[ms, name] for ms, name in second.slowest],
    }


class Watchers:
    """Connections that asked to ``watch`` the run: each closed second (:func:`live_second`) and the
    events a live view shows are written to them as JSON lines. A watcher that does not read
    is dropped rather than let the run's memory grow."""

    #: Events a watcher gets (connections and publishes are too many to pass on one by one).
    EVENTS = frozenset(
        {"error", "paused", "resumed", "storm", "phase", "command", "worker-lost", "control", "stage"}
    )
    #: Events passed on per second at most (a mass failure would otherwise flood the watchers).
    EVENTS_PER_SECOND = 200
    #: Bytes a watcher may leave unread before it is dropped.
    MAX_BACKLOG = 4 * 1024 * 1024

    def __init__(self) -> None:
        self.writers: set[asyncio.StreamWriter] = set()
        self._events_this_second = 0
        self.dropped_events = 0
        #: ``--cluster`` runs: each worker's last second, as a live view shows it.
        self._workers: dict[str, dict[str, Any]] = {}
        #: The run's timeline so far (:func:`~stress.results.timeline.change_json`), which a new
        #: watcher gets first.
        self.changes: list[dict[str, Any]] = []

    def change(self, change: Change) -> None:
        """A change of the run's timeline: kept, and passed on (one with the ``t`` and kind of the
        last replaces it: a storm told again with another process's share)."""
        shown = change_json(change)
        last = self.changes[-1] if self.changes else None
        if last is not None and (last["t"], last["what"]) == (shown["t"], shown["what"]):
            self.changes[-1] = shown
        else:
            self.changes.append(shown)
        self._send({"change": shown})

    def second(self, second: Second) -> None:
        """A second closed: pass its digest on (and, for a cluster, each worker's last second)."""
        self._events_this_second = 0
        self._send({"second": live_second(second)})
        if self._workers:
            self._send({"workers": [self._workers[name] for name in sorted(self._workers)]})

    def worker_second(self, worker: str, second: Second) -> None:
        """One cluster worker's own second: kept until the merged second goes out."""
        self._workers[worker] = {
            "worker": worker,
            "t": second.t,
            "sent": second.sent,
            "connected": second.connected,
            "errors": sum(second.errors.values()),
            "cpu_percent": round(100 * second.cpu_s / second.wall_s, 1) if second.wall_s else 0.0,
            "loop_lag_ms": second.lag.percentile(0.99),
            "lost": self._workers.get(worker, {}).get("lost", False),
        }

    def event(self, event: dict[str, Any]) -> None:
        """An event of the run: pass it on if a live view shows it (and not too many)."""
        if event.get("event") == "worker-lost" and event.get("worker") in self._workers:
            self._workers[str(event["worker"])]["lost"] = True
        if event.get("event") not in self.EVENTS or not self.writers:
            return
        if self._events_this_second >= self.EVENTS_PER_SECOND:
            self.dropped_events += 1
            return
        self._events_this_second += 1
        self._send({"event": event})

    def _send(self, message: dict[str, Any]) -> None:
        if not self.writers:
            return
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        for writer in list(self.writers):
            if writer.is_closing() or writer.transport.get_write_buffer_size() > self.MAX_BACKLOG:
                self.writers.discard(writer)
                writer.close()
            else:
                writer.write(line)


@dataclass
class Registration:
    """A run's entry in the control directory."""

    socket: Path
    info: Path


class ControlServer:
    """The run's end of the control socket."""

    def __init__(self, control: RunControl, folder: Path, watchers: Watchers | None = None) -> None:
        self.control = control
        self.folder = folder
        self.watchers = watchers or Watchers()
        self.server: asyncio.AbstractServer | None = None
        self.registration: Registration | None = None
        #: Connections being served (closed with the server, so none is left to be cancelled).
        self._serving: dict[asyncio.StreamWriter, asyncio.Task[Any]] = {}

    async def start(self) -> None:
        """Listen (a run that cannot is still a run: it says why and goes on)."""
        directory = control_dir()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        pid = os.getpid()
        registration = Registration(directory / f"{pid}.sock", directory / f"{pid}.json")
        registration.socket.unlink(missing_ok=True)  # a PID reused after a run that was killed
        self.server = await asyncio.start_unix_server(
            self._serve, path=str(registration.socket), limit=MAX_REQUEST
        )
        registration.socket.chmod(0o600)
        info = {
            "run_id": self.control.run_id,
            "pid": pid,
            "folder": str(self.folder.resolve()),
            "socket": str(registration.socket),
        }
        temporary = registration.info.with_suffix(".tmp")
        temporary.write_text(json.dumps(info) + "\n", encoding="utf-8")
        temporary.replace(registration.info)
        self.registration = registration

    async def close(self) -> None:
        """Stop listening and leave the control directory."""
        if self.server is not None:
            self.server.close()
        for writer in list(self._serving):
            writer.close()
        if self._serving:
            await asyncio.wait(list(self._serving.values()), timeout=1.0)
        if self.registration is not None:
            self.registration.info.unlink(missing_ok=True)
            self.registration.socket.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - a server callback runs in a task
        self._serving[writer] = task
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than MAX_REQUEST
                    answer: dict[str, Any] = {"ok": False, "error": "request too long"}
                    writer.write(json.dumps(answer).encode() + b"\n")
                    break
                if not line:
                    break
                try:
                    request = json.loads(line)
                except ValueError:
                    answer = {"ok": False, "error": "a request is one line of JSON"}
                else:
                    if isinstance(request, dict) and request.get("op") == "watch":
                        status = self.control.status()
                        answer = {"ok": True, "status": status, "timeline": self.watchers.changes}
                        writer.write(json.dumps(answer).encode() + b"\n")
                        self.watchers.writers.add(writer)
                        continue
                    answer = self.control.handle(request)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            del self._serving[writer]
            self.watchers.writers.discard(writer)
            writer.close()


# ---------------------------------------------------------------------- the other shell


@dataclass(frozen=True)
class RunEntry:
    """A run in progress, as its control file describes it."""

    run_id: str
    pid: int
    folder: str
    socket: str


def runs_in_progress() -> list[RunEntry]:
    """Runs whose control socket answers; files of runs that have gone are removed."""
    directory = control_dir()
    found = []
    for info in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            entry = RunEntry(**json.loads(info.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            continue
        if _answers(entry.socket):
            found.append(entry)
        elif not _alive(entry.pid):
            info.unlink(missing_ok=True)
            Path(entry.socket).unlink(missing_ok=True)
    return found


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_run(name: str | None) -> RunEntry:
    """The run a command acts on: the only one in progress, or the one ``name`` (run id or PID) names."""
    runs = runs_in_progress()
    if name is not None:
        chosen = [run for run in runs if name in (run.run_id, str(run.pid))]
        if not chosen:
            listed = ", ".join(run.run_id for run in runs) or "none"
            raise SteerError(f"no run {name!r} in progress (in progress: {listed})")
        return chosen[0]
    if not runs:
        raise SteerError(f"no run in progress (none has a control socket in {control_dir()})")
    if len(runs) > 1:
        listed = ", ".join(f"{run.run_id} (pid {run.pid})" for run in runs)
        raise SteerError(f"{len(runs)} runs in progress: {listed}; name one with --run")
    return runs[0]


def send(entry: RunEntry, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """One request to a run; its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        try:
            conn.connect(entry.socket)
            conn.sendall(json.dumps(request).encode() + b"\n")
            with conn.makefile("rb") as answers:
                line = answers.readline(MAX_REQUEST)
        except OSError as exc:
            raise SteerError(f"run {entry.run_id} did not answer: {exc}") from None
    try:
        answer = json.loads(line)
    except ValueError:
        raise SteerError(f"run {entry.run_id} ended before it answered") from None
    if not isinstance(answer, dict):
        raise SteerError(f"run {entry.run_id} answered something that is not a JSON object")
    return answer
