"""Where the CPU goes during a benchmark: per program (from /proc), and inside the portal (py-spy)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from labctl.config import LabConfig
from labctl.lab import Lab
from labctl.services import Portal


def cpu_by_process(named: Mapping[int, str] | None = None) -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by every running process, with its program name (from /proc).

    A process in ``named`` (pid: label) is given its label instead: the replicas of the portal
    are all ``gunicorn``, a benchmark's own processes all ``python``.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    labels = named or {}
    processes: dict[int, tuple[str, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        pid = int(stat.parent.name)
        name = labels.get(pid) or text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        processes[pid] = (name, (int(fields[11]) + int(fields[12])) / ticks)
    return processes


@contextmanager
def cpu_usage(
    into: dict[str, float], exited: str = "(exited children)", named: Mapping[int, str] | None = None
) -> Iterator[None]:
    """Fill ``into`` with CPU seconds per program used inside the block.

    Each process's use is its own difference, summed by its program name at the end (a kernel
    worker changes its name with the work it does: by name alone, one that took a new name
    would count its whole life). Processes in ``named`` (pid: label, several pids may share
    one) are counted under their label. Children of this process that exited meanwhile are
    counted under ``exited``; the wall time of the block is under ``"(wall)"``.
    """
    before, children_before, wall = cpu_by_process(named), os.times(), time.monotonic()
    yield
    after, children_after = cpu_by_process(named), os.times()
    totals: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        totals[name] = totals.get(name, 0.0) + seconds - before.get(pid, (name, 0.0))[1]
    into.update({name: used for name, used in totals.items() if used > 0.05})
    into[exited] = (children_after.children_user + children_after.children_system) - (
        children_before.children_user + children_before.children_system
    )
    into["(wall)"] = time.monotonic() - wall


def portal_workers(config: LabConfig) -> dict[str, int]:
    """The gunicorn worker (the child of the master the lab started) of each running portal
    process of the lab, by service name: ``web``, or ``web-1`` ... ``web-N`` with replicas. Read
    from the lab's pid files: empty for a lab that does not run natively (Compose).
    """
    lab = Lab(config)
    workers: dict[str, int] = {}
    for name, service in lab.services.items():
        master = lab.pid(service) if isinstance(service, Portal) else None
        if master is None:
            continue
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            workers[name] = int(children[0])
    return workers


def lab_processes(config: LabConfig) -> dict[int, str]:
    """Every process of the lab's running services (each one's process and its descendants, as
    they are now), labelled for :func:`cpu_usage`: ``portal web`` (or ``portal web-1`` ...),
    ``lab db``, ``lab mosquitto``, ``lab redis``, ``lab front``. Programs of the same name that
    belong to something else on the machine (another lab, a test suite) stay under their name.
    """
    lab = Lab(config)
    labels: dict[int, str] = {}
    for name, service in lab.services.items():
        pid = lab.pid(service)
        label = f"portal {name}" if isinstance(service, Portal) else f"lab {name}"
        for member in _tree(pid) if pid is not None else ():
            labels[member] = label
    return labels


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc; those that exit meanwhile are skipped)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                pending += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def start_profile(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    """Start ``py-spy record --gil`` on the portal worker (py-spy from PyPI; needs ptrace rights).

    The portal runs in one thread under gevent, so the samples holding the GIL are exactly its
    busy time.
    """
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("  py-spy not installed (pip install py-spy): no profile")
        return None
    argv = [
        spy,
        "record",
        "--gil",
        "-p",
        str(pid),
        "-d",
        str(seconds),
        "-r",
        "200",
        "-f",
        "raw",
        "-o",
        str(out),
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def print_cpu(cpu: dict[str, float], top: int = 12) -> None:
    """Print what :func:`cpu_usage` collected, busiest program first."""
    wall = cpu.pop("(wall)")
    print(f"  CPU seconds used by each program ({wall:.1f}s wall, {os.cpu_count()} cores):")
    for name, seconds in sorted(cpu.items(), key=lambda item: -item[1])[:top]:
        print(f"    {seconds:6.1f}  {name}")


def summarize_profile(path: Path, top: int = 30) -> list[str]:
    """Functions by share of samples holding the GIL: total (callees included) and self time.

    Reads py-spy's raw (collapsed stacks) output; line numbers are dropped so a function is one row.
    """
    total: dict[str, int] = {}
    own: dict[str, int] = {}
    all_samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [frame.rsplit(":", 1)[0] + ")" if ":" in frame else frame for frame in stack.split(";")]
        samples = int(count)
        all_samples += samples
        for frame in set(frames[1:]):  # the first frame is the thread
            total[frame] = total.get(frame, 0) + samples
        own[frames[-1]] = own.get(frames[-1], 0) + samples
    lines = ["    total    self  function"]
    for frame, in_frame in sorted(total.items(), key=lambda item: -item[1])[:top]:
        share, self_share = in_frame / max(all_samples, 1), own.get(frame, 0) / max(all_samples, 1)
        lines.append(f"  {share:7.1%} {self_share:7.1%}  {frame}")
    return lines
