"""One worker's share of a cluster run (``--cluster``): what it is (:class:`Share`, with the files
its scenario reads), the Dask task that runs it (:func:`run_share`), and how it talks with the
run's parent, over two Dask event topics per run (:mod:`stress.cluster` is the parent's side)."""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stress.engine import new_loop
from stress.measure.meter import Event
from stress.processes import serve_share
from stress.scenario import Scenario

#: ``local:N`` or a scheduler's address.

#: The files of a scenario's broker settings (the CA to trust, the client certificate and key).
BROKER_FILES = ("ca_file", "cert", "key")
#: How often a worker reads its topic's past messages until its subscription delivers.
CATCH_UP_EVERY_S = 0.5


def portable(scenario: Scenario) -> tuple[Scenario, dict[str, bytes]]:
    """The scenario as workers get it (one engine each, no cluster) and the files it reads
    (credentials, tokens, CA, client certificate and key): their contents travel with the task,
    not their paths."""
    files: dict[str, bytes] = {}
    for key in ("credentials", "tokens"):
        path = scenario.options.get(key)
        if path and Path(path).is_file():
            files[key] = Path(path).read_bytes()
    for key in BROKER_FILES:
        path = getattr(scenario.broker, key)
        if path is not None:
            files[key] = path.read_bytes()
    if scenario.active is not None and scenario.active.is_file():
        files["active"] = scenario.active.read_bytes()
    return replace(scenario, processes=1, cluster=None, out=None, cpus=()), files


def placed_in(scenario: Scenario, files: dict[str, bytes], folder: Path) -> Scenario:
    """The scenario reading the shipped files from ``folder`` on this worker."""
    options = dict(scenario.options)
    broker = scenario.broker
    for key, content in files.items():
        path = folder / key
        path.write_bytes(content)
        path.chmod(0o600)
        if key == "ca_file":
            broker = replace(broker, ca_file=path)
        elif key == "cert":
            broker = replace(broker, cert=path)
        elif key == "key":
            broker = replace(broker, key=path)
        elif key != "active":
            options[key] = str(path)
    # The --active list is kept up to date here by the parent (see ClusterFleet._mirror_active)
    active = folder / "active" if scenario.active is not None else None
    return replace(scenario, options=options, broker=broker, active=active)


def up_topic(run: str) -> str:
    return f"stress-{run}-up"


def down_topic(run: str, number: int) -> str:
    return f"stress-{run}-down-{number}"


def blob(kind: str, value: Any, events: list[Event] | None) -> bytes:
    return pickle.dumps((kind, value, events or []), protocol=pickle.HIGHEST_PROTOCOL)


def unblob(blob: bytes) -> tuple[str, Any, list[Event]]:
    # Only this run's tasks, checked to run this very code, log on its topics
    kind, value, events = pickle.loads(blob)  # noqa: S301
    return kind, value, events


class _TaskChannel:
    """The worker's end: sends by logging on the run's topic, receives from its own topic.

    The parent numbers its messages; they are handed on once each, in order. A subscription
    takes effect at the scheduler some time after it is asked for, so until the first message
    has arrived the worker also reads what its topic already holds (``Client.get_events``):
    a ``go`` sent just before the subscription took effect is not lost.
    """

    def __init__(self, run: str, number: int, offset_s: float, folder: Path) -> None:
        from distributed import get_client, get_worker  # noqa: PLC0415 - runs inside a Dask task

        self.run, self.number, self.offset_s, self.folder = run, number, offset_s, folder
        self.topic = down_topic(run, number)
        self.loop = asyncio.get_running_loop()
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.next = 1
        self.early: dict[int, bytes] = {}
        self.worker = get_worker()
        self.client = get_client()
        self.client.subscribe_topic(self.topic, self._arrived)
        self.catch_up = asyncio.create_task(self._catch_up())

    def _arrived(self, event: tuple[float, Any]) -> None:
        self.loop.call_soon_threadsafe(self._take, event[1])

    def _take(self, message: dict[str, Any]) -> None:
        number = int(message["s"])
        if number >= self.next:
            self.early[number] = message["b"]
        while self.next in self.early:
            self.inbox.put_nowait(self.early.pop(self.next))
            self.next += 1

    async def _catch_up(self) -> None:
        while self.next == 1:
            await asyncio.sleep(CATCH_UP_EVERY_S)
            for _, message in await asyncio.to_thread(self.client.get_events, self.topic):
                self._take(message)

    def send(self, kind: str, value: Any = None, events: list[Event] | None = None) -> None:
        self.worker.log_event(up_topic(self.run), {"w": self.number, "b": blob(kind, value, events)})

    async def receive(self) -> tuple[str, Any, list[Event]]:
        kind, value, events = unblob(await self.inbox.get())
        while kind == "file":  # a file the scenario reads changed on the parent's machine
            self._replace(*value)
            kind, value, events = unblob(await self.inbox.get())
        if kind == "go":
            value = self._local(value)
        elif kind == "control" and value[0] == "rate":
            value = (*value[:2], self._local(value[2]))
        return kind, value, events

    def _replace(self, name: str, content: bytes | None) -> None:
        """This worker's copy of a shipped file, now as the parent has it (None: removed)."""
        path = self.folder / name
        if content is None:
            path.unlink(missing_ok=True)
            return
        fresh = path.with_suffix(".new")
        fresh.write_bytes(content)
        fresh.replace(path)

    def _local(self, parent_wall: float) -> float:
        """A parent's wall-clock instant on this worker's event-loop clock."""
        return parent_wall + self.offset_s - time.time() + self.loop.time()

    async def close(self) -> None:
        self.catch_up.cancel()
        with contextlib.suppress(ValueError):
            self.client.unsubscribe_topic(self.topic)


@dataclass(frozen=True)
class Share:
    """What one worker's task needs: its part of the fleet and the run's clocks."""

    run: str
    number: int
    scenario: Scenario
    #: The files the scenario reads (see :func:`portable`).
    files: dict[str, bytes]
    indexes: range
    #: The run's start on the parent's wall clock, and this worker's clock minus the parent's.
    wall_start: float
    offset_s: float


def run_share(share: Share) -> str:
    """The Dask task: run this share of the fleet, reporting over the run's topics."""

    async def serve(folder: Path) -> None:
        channel = _TaskChannel(share.run, share.number, share.offset_s, folder)
        loop = asyncio.get_running_loop()
        start = loop.time() - (time.time() - (share.wall_start + share.offset_s))
        scenario = placed_in(share.scenario, share.files, folder)
        await serve_share(channel, scenario, share.indexes, start, share.wall_start)

    with (
        tempfile.TemporaryDirectory(prefix="stress-") as folder,
        asyncio.Runner(loop_factory=new_loop) as runner,
    ):
        runner.run(serve(Path(folder)))
    return "done"
