"""``--processes N``: a fleet split over several processes, its seconds merged exactly.

Each worker process runs one :class:`~stress.engine.Engine` on every N-th device of the
fleet (so each stage of a ramp is split evenly too). The parent process starts the workers,
keeps the run folder and the console, and talks to each worker over a socket pair (see
:class:`Channel`):

- a worker says ``ready`` once every device of its first stage has tried to connect; when
  all have, the parent answers ``go`` with one start time, so every process publishes on the
  same grid (a burst is one instant across the machine) and counts seconds from the same
  start;
- each second a worker sends its closed :class:`~stress.measure.meter.Second` (counters and sparse
  histograms) with that second's events; the parent merges second ``t`` of every process
  into one (counters and histogram buckets add; nothing is averaged) and only then writes it;
- ``stop`` goes from the parent to every worker on Ctrl-C or SIGTERM (a second one skips the
  drain), and each worker ends with ``done`` and what it knows about how its run ended.

Workers ignore SIGINT, which a terminal sends to the whole process group: the parent relays
it once, so one Ctrl-C never counts twice. A worker that dies stops the run, which is
reported as an error naming the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
import signal
import socket
import struct
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stress.engine import Engine, new_loop
from stress.measure.meter import Event, Meter, Second
from stress.results.summary import merge_by_second
from stress.scenario import Scenario
from stress.targets.registry import build

#: Between the last ``ready`` and the common start, for ``go`` to reach every worker.
START_MARGIN_S = 0.05


#: Seconds between the parent relaying a new interval and the instant every worker adopts it.
RELAY_LEAD_S = 0.1


def split(devices: int, processes: int) -> list[range]:
    """Device indexes of each process: every N-th device, so every stage splits evenly."""
    count = max(1, min(processes, devices))
    return [range(k, devices, count) for k in range(count)]


@dataclass
class Ending:
    """How a worker's run ended, as it reports it in ``done``."""

    stopped: str | None = None
    unreadable: int = 0
    observed: bool = False


class Channel:
    """Pickled messages, each with its length in front, over one end of a socket pair."""

    HEADER = struct.Struct("!I")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def over(cls, sock: socket.socket) -> Channel:
        """A channel on ``sock`` for the running loop."""
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        return cls(reader, writer)

    def send(self, kind: str, value: Any = None, events: list[Event] | None = None) -> None:
        """Queue one message (never blocks; a closed channel drops it: its end is reported)."""
        if not self.writer.is_closing():
            body = pickle.dumps((kind, value, events or []), protocol=pickle.HIGHEST_PROTOCOL)
            self.writer.write(self.HEADER.pack(len(body)) + body)

    async def receive(self) -> tuple[str, Any, list[Event]]:
        """The next message; ``asyncio.IncompleteReadError`` once the other end has gone."""
        (size,) = self.HEADER.unpack(await self.reader.readexactly(self.HEADER.size))
        # Only the processes of this run write to this socket pair
        kind, value, events = pickle.loads(await self.reader.readexactly(size))  # noqa: S301
        return kind, value, events

    async def close(self) -> None:
        """Send what is queued, then close."""
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


#: Raised by :meth:`Channel.receive` when the other process has gone.
GONE = (asyncio.IncompleteReadError, ConnectionError)


def work(
    sock: socket.socket,
    scenario: Scenario,
    indexes: range,
    start: float,
    wall_start: float,
    *,
    cpu: int | None = None,
) -> None:
    """A worker process: run this share of the fleet and report to the parent over ``sock``
    (on CPU ``cpu`` alone, when given)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cpu is not None:
        os.sched_setaffinity(0, (cpu,))
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(_work(sock, scenario, indexes, start, wall_start))


async def _work(
    sock: socket.socket, scenario: Scenario, indexes: range, start: float, wall_start: float
) -> None:
    channel = await Channel.over(sock)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, _stop_on_sigterm)
    await serve_share(channel, scenario, indexes, start, wall_start)


#: The engine a worker process runs, for its SIGTERM handler.
_engines: list[Engine] = []


def _stop_on_sigterm() -> None:
    for engine in _engines:
        engine.stop("signal SIGTERM")


async def serve_share(
    channel: Any, scenario: Scenario, indexes: range, start: float, wall_start: float
) -> None:
    """Run this share of the fleet, reporting to the parent over ``channel`` (a :class:`Channel`,
    or anything with its ``send``, ``receive`` and ``close``): ``start`` is the run's start on
    this process's event-loop clock, ``wall_start`` the same instant in epoch seconds."""
    loop = asyncio.get_running_loop()
    meter = Meter(start, wall_start=wall_start)
    events: list[Event] = []
    meter.sinks.append(events.append)
    go: asyncio.Future[float] = loop.create_future()

    def closed(second: Second) -> None:
        channel.send("second", second.to_wire(), events[:])
        events.clear()

    async def gate() -> float:
        channel.send("ready")
        return await go

    try:
        engine = Engine(scenario, build(scenario), indexes=indexes, on_second=closed, meter=meter, gate=gate)
    except Exception:
        channel.send("failed", traceback.format_exc(limit=8))
        await channel.close()
        raise

    async def listen() -> None:
        try:
            while True:
                kind, value, _ = await channel.receive()
                if kind == "go" and not go.done():
                    go.set_result(value)
                elif kind == "stop":
                    engine.stop(value)
                elif kind == "control":
                    _apply(engine, value)
        except GONE:  # the parent is gone: nobody will read the results
            engine.stop("the parent process exited", drain=False)

    listener = asyncio.create_task(listen())
    _engines.append(engine)
    try:
        await engine.run()
    except Exception:
        channel.send("failed", traceback.format_exc(limit=8))
        raise
    finally:
        listener.cancel()
        observer = engine.observer
        ending = Ending(engine.stopped, observer.unreadable if observer else 0, observer is not None)
        channel.send("done", vars(ending), events)
        _engines.remove(engine)
        await channel.close()


def _apply(engine: Engine, request: tuple[Any, ...]) -> None:
    """A control request relayed by the parent (already validated there)."""
    op, *args = request
    if op == "pause":
        engine.set_paused(args[0], args[1])
    elif op == "scale":
        engine.scale(args[0])
    elif op == "rate":
        engine.set_interval(args[0], args[1])


@dataclass
class Worker:
    """The parent's view of one worker process."""

    number: int
    process: Any  # multiprocessing's SpawnProcess
    sock: socket.socket
    channel: Channel | None = None
    ready: bool = False
    done: bool = False
    last_t: int = -1
    ending: Ending = field(default_factory=Ending)


class Fleet:
    """The parent side: starts the workers, relays stops, merges their seconds in order."""

    #: Between the last ``ready`` and the common start, for ``go`` to reach every worker.
    start_margin_s = START_MARGIN_S

    def __init__(
        self,
        scenario: Scenario,
        *,
        start: float,
        wall_start: float,
        on_second: Callable[[Second], None],
        on_event: Callable[[Event], None],
    ) -> None:
        self.scenario = scenario
        self.start = start
        self.wall_start = wall_start
        self.on_second = on_second
        self.on_event = on_event
        self.workers: list[Worker] = []
        #: Seconds received but not yet merged: second number -> one per worker so far.
        self.pending: dict[int, list[Second]] = {}
        self.stopped: str | None = None
        #: When publishing starts, once every worker is ready.
        self.begin: float | None = None
        self.failures: list[str] = []
        #: Devices connected at the end of the last merged second.
        self.last_connected = 0

    def launch(self) -> None:
        """Start one worker per share of the fleet."""
        context = multiprocessing.get_context("spawn")
        cpus = self.scenario.cpus
        for number, indexes in enumerate(split(self.scenario.devices, self.scenario.processes)):
            mine, theirs = socket.socketpair()
            cpu = cpus[number % len(cpus)] if cpus else None
            process = context.Process(
                target=work,
                args=(theirs, self.scenario, indexes, self.start, self.wall_start),
                kwargs={"cpu": cpu},
                name=f"stress-worker-{number}",
                daemon=True,
            )
            process.start()
            theirs.close()
            self.workers.append(Worker(number, process, mine))

    async def run(self) -> None:
        """Until every worker has reported ``done`` (or died)."""
        for worker in self.workers:
            worker.channel = await Channel.over(worker.sock)
        try:
            await asyncio.gather(*(self._listen(worker) for worker in self.workers))
        finally:
            for worker in self.workers:
                await asyncio.to_thread(worker.process.join, 10)
                if worker.process.is_alive():  # pragma: no cover - a worker that ignores its pipe closing
                    worker.process.kill()
            self._flush(everything=True)

    def stop(self, reason: str) -> None:
        """Relay a stop to every worker (a second one skips the drain)."""
        if self.stopped is None:
            self.stopped = reason
        for worker in self.workers:
            if not worker.done and worker.channel is not None:
                worker.channel.send("stop", reason)

    # ------------------------------------------------------------------ control (stress.control)

    def set_paused(self, indexes: list[int], paused: bool) -> None:
        """Each device's pause or resume goes to the worker that runs it (``split``: index mod N)."""
        count = len(self.workers)
        shares: dict[int, list[int]] = {}
        for index in indexes:
            shares.setdefault(index % count, []).append(index)
        for number, share in shares.items():
            self._relay(self.workers[number], "pause", share, paused)

    def scale(self, devices: int) -> None:
        """Every worker resizes its share of the fleet."""
        for worker in self.workers:
            self._relay(worker, "scale", devices)

    def set_interval(self, interval: float) -> None:
        """Every worker moves to the new grid at one instant, shortly after now."""
        anchor = asyncio.get_running_loop().time() + RELAY_LEAD_S
        for worker in self.workers:
            self._relay(worker, "rate", interval, anchor)

    def connected_count(self) -> int:
        """Devices connected at the end of the last second."""
        return self.last_connected

    @staticmethod
    def _relay(worker: Worker, *request: Any) -> None:
        if not worker.done and worker.channel is not None:
            worker.channel.send("control", request)

    # ------------------------------------------------------------------ messages

    async def _listen(self, worker: Worker) -> None:
        channel = worker.channel
        assert channel is not None  # noqa: S101 - run() opened it
        try:
            while not worker.done:
                kind, value, events = await channel.receive()
                self._events(worker, events)
                if kind == "second":
                    second = Second.from_wire(value)
                    worker.last_t = second.t
                    self._own_second(worker, second)
                    self.pending.setdefault(second.t, []).append(second)
                    self._flush()
                elif kind == "ready":
                    worker.ready = True
                    self._maybe_go()
                elif kind == "done":
                    worker.ending = Ending(**value)
                    self._finish(worker)
                elif kind == "failed":
                    name = self._name(worker)
                    self.failures.append(f"{name} failed: {value.strip().splitlines()[-1]}")
                    self.stop(f"error: {name} failed")
        except GONE:
            await self._gone(worker)
        finally:
            await channel.close()

    def _name(self, worker: Worker) -> str:
        """How messages name a worker."""
        return f"process {worker.number}"

    def _own_second(self, worker: Worker, second: Second) -> None:
        """A worker's own second, before the merge, which only reads it (kept by fleets that
        show each worker)."""

    async def _gone(self, worker: Worker) -> None:
        """A worker's channel closed before its ``done``: the process died, so the run stops."""
        await asyncio.to_thread(worker.process.join, 5)
        self.failures.append(f"process {worker.number} exited early (exit code {worker.process.exitcode})")
        self.stop(f"error: process {worker.number} exited early")
        self._finish(worker)

    def _events(self, worker: Worker, events: list[Event]) -> None:
        for event in events:
            if event.get("event") == "phase" and worker.number:
                continue  # the first process speaks for all: they change phase together
            event["process"] = worker.number
            self.on_event(event)

    def _maybe_go(self) -> None:
        """Once every running worker is ready: tell them all when publishing starts."""
        waiting = [worker for worker in self.workers if not worker.done]
        if self.begin is None and waiting and all(worker.ready for worker in waiting):
            self.begin = asyncio.get_running_loop().time() + self.start_margin_s
            for worker in waiting:
                if worker.channel is not None:
                    worker.channel.send("go", self.begin)

    def _finish(self, worker: Worker) -> None:
        worker.done = True
        self._maybe_go()  # the others need not wait for it to be ready
        self._flush()

    def _flush(self, *, everything: bool = False) -> None:
        """Hand on, in order, every second that all running workers have closed."""
        while self.pending:
            t = min(self.pending)
            if not everything and any(not w.done and w.last_t < t for w in self.workers):
                return
            second = merge_by_second([[part] for part in self.pending.pop(t)])[0]
            self._completing(second)
            self.last_connected = second.connected
            self.on_second(second)

    def _completing(self, second: Second) -> None:
        """A merged second, before it is handed on (completed by fleets that lose workers)."""

    # ------------------------------------------------------------------ results

    def ending(self) -> Ending:
        """How the whole run ended (``stopped`` None: completed), from every worker's ending."""
        endings = [worker.ending for worker in self.workers]
        return Ending(
            self.stopped or next((ending.stopped for ending in endings if ending.stopped), None),
            sum(ending.unreadable for ending in endings),
            any(ending.observed for ending in endings),
        )
