"""``--cluster ADDRESS``: a fleet split over Dask workers, its seconds merged exactly.

The parent (the ``stress run`` process) connects to a Dask scheduler (``tcp://HOST:PORT``) or
starts a local cluster (``local:N``) and runs one task per worker. Each task runs one
:class:`~stress.engine.Engine` on its share of the fleet, split as ``--processes`` splits it,
and speaks the protocol of :mod:`stress.processes` (``ready``, ``go``, ``second``, ``control``,
``stop``, ``done``) through Dask: a worker logs its messages on the run's topic
(``Worker.log_event``) and the parent, subscribed to it, hands them to the same merge as for
local processes; the parent's messages go to one topic per worker, to which the task's client
is subscribed. Nothing but Dask's own comms carries them.

Clocks: before the start the parent measures each worker's clock against its own by round
trips (``Client.run(time.time)``, the sample with the shortest round trip kept). Times that
cross (the common start, the instant a new interval takes effect) travel as the parent's
wall-clock time and each worker turns them into its own clock with its offset, so a burst is
one instant across the cluster within the measured uncertainty (half the round trip).

A worker that leaves the cluster during the run is lost: the run goes on with the others, the
lost share's devices count as failed (``worker-lost``) from then on, and the summary names it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stress.cluster_share import Share, blob, down_topic, portable, run_share, unblob, up_topic
from stress.engine.faults import ACTIVE_POLL_S
from stress.errors import StressError
from stress.measure.meter import Event, Second
from stress.measure.saturation import SATURATED_SHARE
from stress.processes import Fleet, Worker, split
from stress.results.model import ClusterSummary, WorkerSummary
from stress.results.summary import saturated

#: ``local:N`` or a scheduler's address.
LOCAL = re.compile(r"local:(\d{1,3})")
SCHEME = re.compile(r"(tcp|tls|ws|wss|inproc)://\S+")
#: How long the scheduler may take to answer, and workers to show up.
CONNECT_TIMEOUT_S = 10.0
#: Round trips measured per worker to find its clock offset.
CLOCK_ROUNDS = 7
#: Between the last ``ready`` and the common start: ``go`` crosses the scheduler to every worker.
START_MARGIN_S = 0.5
#: How often the parent looks for workers that left the cluster.
WATCH_EVERY_S = 0.5
#: A worker closes a second every second: one silent this long is lost (the scheduler, or the
#: network to it, may be gone), so a run always ends.
SILENT_S = 15.0


#: Dask settings for workers that run engines: no task profiler, slower ticks and monitor.
QUIET_DASK = {
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
    "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "1s",
    "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL": "5s",
}


class ClusterError(StressError):
    """The cluster cannot run this fleet; the message is one line saying what to do."""


def address(text: str) -> str:
    """A valid ``--cluster`` value, or ValueError with the reason."""
    local = LOCAL.fullmatch(text)
    if local:
        if not 1 <= int(local[1]) <= 256:
            raise ValueError(f"local:N needs 1..256 workers, not {local[1]}")
        return text
    if SCHEME.fullmatch(text):
        return text
    raise ValueError(f"{text!r} is not local:N or a Dask scheduler address such as tcp://10.0.0.5:8786")


def fingerprint() -> str:
    """This install's version of ``stress``: the package version and a hash of its code."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return f"{importlib.metadata.version('iot-lab')} ({digest.hexdigest()[:12]})"


@dataclass
class Member:
    """One Dask worker of the run, as the parent knows it."""

    address: str
    host: str
    #: This worker's clock minus the parent's, and the round trip it was measured with.
    offset_s: float = 0.0
    rtt_s: float = 0.0
    devices: int = 0


@dataclass
class Cluster:
    """A connected Dask client and the workers the run uses."""

    client: Any
    scheduler: str
    members: list[Member] = field(default_factory=list)

    def describe(self, lost: list[str], seconds: dict[int, list[Second]]) -> ClusterSummary:
        """The summary's ``cluster``: each worker with what its own seconds say."""
        return ClusterSummary(
            scheduler=self.scheduler,
            workers=tuple(
                WorkerSummary(
                    address=member.address,
                    host=member.host,
                    devices=member.devices,
                    clock_offset_ms=round(member.offset_s * 1000, 3),
                    clock_uncertainty_ms=round(member.rtt_s * 500, 3),
                    **_breakdown(seconds.get(number, [])),
                )
                for number, member in enumerate(self.members)
            ),
            lost=tuple(lost),
            # The common start is one instant on every worker within half its clock round trip.
            start_alignment_ms=round(max((m.rtt_s * 500 for m in self.members), default=0.0), 3),
        )


def _breakdown(seconds: list[Second]) -> dict[str, Any]:
    """One worker's share of the run: its totals, its generator's load, whether it saturated."""
    running = [second for second in seconds if second.phase == "run"]
    total = Second(-1)
    for second in seconds:
        total.merge(second)
    wall_s = sum(second.wall_s for second in running) or 1e-9
    return {
        "sent": total.sent,
        "acked": total.acked,
        "failed": total.failed,
        "errors": sum(total.errors.values()),
        "connections_peak": max((max(s.connected, s.connected_peak) for s in seconds), default=0),
        "msgs_per_s": round(total.sent / wall_s, 1) if running else 0.0,
        "cpu_percent": round(100 * sum(second.cpu_s for second in running) / wall_s, 1),
        "loop_lag_p99_ms": total.lag.percentile(0.99),
        "saturated_seconds": sum(1 for second in running if saturated(second)),
        "run_seconds": len(running),
    }


def saturation_notes(described: ClusterSummary) -> list[str]:
    """A line naming each worker whose generator was saturated, as the run's is judged."""
    return [
        f"worker {worker.address} ({worker.host}) was saturated in {worker.saturated_seconds} of "
        f"{worker.run_seconds} seconds: give it fewer devices (more workers)"
        for worker in described.workers
        if worker.run_seconds and worker.saturated_seconds >= SATURATED_SHARE * worker.run_seconds
    ]


@contextlib.contextmanager
def connect(where: str) -> Iterator[Cluster]:
    """The cluster of ``--cluster``, checked: reachable, with workers, all on this version."""
    from distributed import Client, LocalCluster  # noqa: PLC0415 - only cluster runs need Dask

    # The scheduler of local:N runs in this process; its comings and goings are not the run's.
    logging.getLogger("distributed").setLevel(logging.ERROR)
    local = LOCAL.fullmatch(where)
    with contextlib.ExitStack() as stack:
        if local:
            # Dask's periodic work (profiler, ticks, system monitor) costs a load generator about
            # a tenth of its throughput; local workers start with it turned down (bench/cluster.py).
            for name, value in QUIET_DASK.items():
                os.environ.setdefault(name, value)
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=int(local[1]),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            )
            client = stack.enter_context(Client(cluster))
            scheduler = str(cluster.scheduler_address)
        else:
            try:
                client = stack.enter_context(Client(where, timeout=CONNECT_TIMEOUT_S))
            except (OSError, TimeoutError) as exc:
                raise ClusterError(
                    f"cannot reach the Dask scheduler at {where} ({_first_line(exc)}): "
                    "is `dask scheduler` running there, and is the address right?"
                ) from None
            scheduler = where
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except TimeoutError:
            raise ClusterError(
                f"no Dask worker is connected to the scheduler at {scheduler}: "
                f"start some with `dask worker {scheduler}`"
            ) from None
        found = _members(client)
        versions = client.run(fingerprint)
        mine = fingerprint()
        other = {worker: version for worker, version in versions.items() if version != mine}
        if other:
            listed = ", ".join(f"{worker} has {version}" for worker, version in sorted(other.items()))
            raise ClusterError(
                f"Dask workers run another version of stress ({listed}; this is {mine}): "
                "install the same locked version on every worker"
            )
        yield Cluster(client, scheduler, found)


def _members(client: Any) -> list[Member]:
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return [Member(address, str(info.get("host", ""))) for address, info in sorted(workers.items())]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def measure_clocks(cluster: Cluster) -> None:
    """Each worker's clock offset from this one, from the round trip with the least delay."""
    for member in cluster.members:
        best: tuple[float, float] | None = None
        for _ in range(CLOCK_ROUNDS):
            sent = time.time()
            theirs = cluster.client.run(time.time, workers=[member.address])[member.address]
            back = time.time()
            sample = (back - sent, theirs - (sent + back) / 2)
            best = sample if best is None or sample[0] < best[0] else best
        assert best is not None  # noqa: S101 - CLOCK_ROUNDS > 0
        member.rtt_s, member.offset_s = best


# ---------------------------------------------------------------------------- files


def ship_behaviour(cluster: Cluster, behaviour: str) -> None:
    """A behaviour plug-in (``module:Class``) goes to every worker: its top-level module file,
    or its package as a zip (``Client.upload_file``), unless it is part of ``stress``."""
    module_name, separator, _ = behaviour.partition(":")
    if not separator:
        return
    top = module_name.split(".", 1)[0]
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        found = None
    if found is None or found.origin is None or top == "stress":
        return  # (not importable here either: the run says so as without a cluster)
    origin = Path(found.origin)
    if origin.name != "__init__.py":
        cluster.client.upload_file(str(origin), load=False)
        return
    with tempfile.TemporaryDirectory(prefix="stress-plugin-") as folder:
        archive = Path(folder) / f"{top}.zip"
        with zipfile.ZipFile(archive, "w") as packed:
            for path in sorted(origin.parent.rglob("*.py")):
                packed.write(path, Path(top) / path.relative_to(origin.parent))
        cluster.client.upload_file(str(archive), load=False)


# ---------------------------------------------------------------------------- the parent's side


class _ParentChannel:
    """The parent's end for one worker: its messages arrive through the fleet's subscription."""

    def __init__(self, fleet: ClusterFleet, number: int) -> None:
        self.fleet, self.number = fleet, number
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()

    def send(self, kind: str, value: Any = None, events: list[Event] | None = None) -> None:
        loop = asyncio.get_running_loop()
        if kind == "go":
            value = value - loop.time() + time.time()
        elif kind == "control" and value[0] == "rate":
            value = (*value[:2], value[2] - loop.time() + time.time())
        self.fleet.post(self.number, blob(kind, value, events))

    async def receive(self) -> tuple[str, Any, list[Event]]:
        blob = await self.inbox.get()
        if blob is None:
            raise ConnectionError("worker lost")
        self.fleet.heard[self.number] = asyncio.get_running_loop().time()
        return unblob(blob)

    async def close(self) -> None:
        return None


class ClusterFleet(Fleet):
    """:class:`~stress.processes.Fleet` over Dask workers instead of local processes."""

    start_margin_s = START_MARGIN_S

    def __init__(self, cluster: Cluster, run: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cluster = cluster
        self.run_name = run
        self.futures: dict[int, Any] = {}
        self.channels: dict[int, _ParentChannel] = {}
        #: Lost workers: number -> the first second they no longer report.
        self.lost: dict[int, int] = {}
        self.lost_addresses: list[str] = []
        #: Messages to the workers leave from one thread, in order.
        self.sender = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="stress-cluster-send")
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Each worker's messages per second last reported (what its devices would offer).
        self.offered: dict[int, int] = {}
        #: The number of the last message sent to each worker.
        self.sequence: dict[int, int] = {}
        #: Each worker's own seconds, before the merge (for the per-worker breakdown).
        self.seconds: dict[int, list[Second]] = {}
        #: When each worker was last heard from (the parent's loop clock).
        self.heard: dict[int, float] = {}
        #: Where a lost worker is said at once (the console), if anywhere.
        self.say: Callable[[str], None] | None = None
        #: Where each worker's own seconds also go (the run folder's ``workers.csv``).
        self.on_worker_second: Callable[[str, Second], None] | None = None

    def post(self, number: int, blob: bytes) -> None:
        """Send one message to worker ``number`` (numbered, in order, without blocking the loop)."""
        self.sequence[number] = self.sequence.get(number, 0) + 1
        message = {"s": self.sequence[number], "b": blob}
        self.sender.submit(self.cluster.client.log_event, down_topic(self.run_name, number), message)

    def launch(self) -> None:
        """One task per worker, each pinned to its worker and never run again elsewhere."""
        self.loop = asyncio.get_running_loop()
        client = self.cluster.client
        client.subscribe_topic(up_topic(self.run_name), self._arrived)
        scenario, files = portable(self.scenario)
        shares = split(self.scenario.devices, len(self.cluster.members))
        for number, (member, indexes) in enumerate(zip(self.cluster.members, shares, strict=False)):
            member.devices = len(indexes)
            channel = _ParentChannel(self, number)
            self.channels[number] = channel
            self.workers.append(Worker(number, None, None, channel))  # type: ignore[arg-type]
            share = Share(self.run_name, number, scenario, files, indexes, self.wall_start, member.offset_s)
            self.futures[number] = client.submit(
                run_share,
                share,
                workers=[member.address],
                allow_other_workers=False,
                retries=0,
                pure=False,
                key=f"stress-{self.run_name}-{number}",
            )

    def _arrived(self, event: tuple[float, Any]) -> None:
        message = event[1]
        channel = self.channels.get(int(message["w"]))
        if channel is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(channel.inbox.put_nowait, message["b"])

    async def run(self) -> None:
        """Until every worker has reported ``done`` or is lost."""
        watcher = asyncio.create_task(self._watch())
        mirror = asyncio.create_task(self._mirror_active())
        try:
            await asyncio.gather(*(self._listen(worker) for worker in self.workers))
        finally:
            watcher.cancel()
            mirror.cancel()
            self._flush(everything=True)
            client = self.cluster.client
            with contextlib.suppress(ValueError):
                client.unsubscribe_topic(up_topic(self.run_name))
            for future in self.futures.values():
                future.cancel()
            self.sender.shutdown(wait=True)

    async def _watch(self) -> None:
        """Workers that left the cluster, or whose task ended without ``done``, are lost."""
        while True:
            await asyncio.sleep(WATCH_EVERY_S)
            present = await asyncio.to_thread(self._present)
            now = asyncio.get_running_loop().time()
            for worker in self.workers:
                member = self.cluster.members[worker.number]
                future = self.futures[worker.number]
                if worker.done or worker.number in self.lost:
                    continue
                if member.address not in present or future.status in ("error", "cancelled", "lost"):
                    self._lose(worker, member.address, future)
                elif now - self.heard.get(worker.number, now) > SILENT_S:
                    self._lose(worker, member.address, future, f": silent for {SILENT_S:g} s")

    async def _mirror_active(self) -> None:
        """The ``--active`` list is read on this machine: each change goes to every worker."""
        path = self.scenario.active
        if path is None:
            return
        seen = _version(path)
        while True:
            await asyncio.sleep(ACTIVE_POLL_S)
            version = _version(path)
            if version == seen:
                continue
            seen = version
            try:
                content = path.read_bytes() if version is not None else None
            except OSError:
                continue  # unreadable for now: the workers keep what they have
            for worker in self.workers:
                if not worker.done and worker.number not in self.lost:
                    self.post(worker.number, blob("file", ("active", content), None))

    def _present(self) -> set[str]:
        return set(self.cluster.client.scheduler_info(n_workers=-1)["workers"])

    def _lose(self, worker: Worker, where: str, future: Any, detail: str = "") -> None:
        self.lost[worker.number] = worker.last_t + 1
        self.lost_addresses.append(where)
        if future.status == "error":
            with contextlib.suppress(Exception):
                detail = f": {_first_line(future.exception(timeout=1))}"
        devices = self.cluster.members[worker.number].devices
        message = (
            f"worker {where} lost{detail}; its {devices} devices count as failed "
            f"(worker-lost) from second {worker.last_t + 1}"
        )
        self.failures.append(message)
        self.on_event({"event": "worker-lost", "worker": where, "t": worker.last_t + 1, "detail": message})
        if self.say is not None:
            self.say(f"stress: {message}")
        future.cancel()
        self.channels[worker.number].inbox.put_nowait(None)
        if self.scenario.on_worker_lost == "stop":
            self.stop(f"error: worker {where} lost")

    def _name(self, worker: Worker) -> str:
        return f"worker {self.cluster.members[worker.number].address}"

    def _own_second(self, worker: Worker, own: Second) -> None:
        self.seconds.setdefault(worker.number, []).append(own)
        if self.on_worker_second is not None:
            self.on_worker_second(self.cluster.members[worker.number].address, own)
        if own.phase == "run" and own.offered:
            self.offered[worker.number] = own.offered

    async def _gone(self, worker: Worker) -> None:
        """Its channel was closed because it was lost (see :meth:`_lose`): the others go on."""
        self._finish(worker)

    def _completing(self, second: Second) -> None:
        """The devices of lost workers fail for every second after their loss."""
        for number, since in self.lost.items():
            if second.t >= since and second.phase == "run":
                devices = self.cluster.members[number].devices
                second.errors[("run", "worker-lost")] = second.errors.get(("run", "worker-lost"), 0) + devices
                offered = self.offered.get(number, 0)
                second.offered += offered
                second.failed += offered


def _version(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)
