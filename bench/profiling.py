"""Where the CPU goes during a benchmark: per program (from /proc), and inside the portal (py-spy)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labctl.lab import Lab


def cpu_by_program() -> dict[str, float]:
    """CPU seconds used so far by every running process, summed by program name (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        totals[name] = totals.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return totals


@contextmanager
def cpu_usage(into: dict[str, float], exited: str = "(exited children)") -> Iterator[None]:
    """Fill ``into`` with CPU seconds per program used inside the block.

    Children of this process that exited meanwhile are counted under ``exited``; the wall time of
    the block is under ``"(wall)"``.
    """
    before, children_before, wall = cpu_by_program(), os.times(), time.monotonic()
    yield
    after, children_after = cpu_by_program(), os.times()
    for name, seconds in after.items():
        used = seconds - before.get(name, 0.0)
        if used > 0.05:
            into[name] = used
    into[exited] = (children_after.children_user + children_after.children_system) - (
        children_before.children_user + children_before.children_system
    )
    into["(wall)"] = time.monotonic() - wall


def worker_pid(lab: Lab | None) -> int | None:
    """The gunicorn worker of the portal (the child of the master the lab started)."""
    master = None if lab is None else lab.pid(lab.service("web"))
    if master is None:
        return None
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(children[0]) if children else None


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


def print_cpu(cpu: dict[str, float], top: int = 8) -> None:
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
