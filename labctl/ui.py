"""How the launcher talks to the user: steps with a spinner and elapsed time, one-line errors."""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_FRAMES = "|/-\\"


class Step:
    """A running step; `note` changes the text shown while it runs, `result` what it ends with."""

    def __init__(self, label: str, result: str) -> None:
        self.label = label
        self.detail = ""
        self.result = result
        self.started = time.monotonic()

    def note(self, detail: str) -> None:
        """Show what the step is doing now (e.g. 'waiting for the portal')."""
        self.detail = detail

    def elapsed(self) -> str:
        """Seconds since the step began, for the user."""
        return f"{time.monotonic() - self.started:.0f}s"


@contextmanager
def step(label: str, done: str = "ok") -> Iterator[Step]:
    """Show `label` with a live spinner on a terminal; print the outcome when it ends."""
    current = Step(label, done)
    interactive = sys.stdout.isatty()
    stop = threading.Event()

    def spin() -> None:
        for frame in itertools.cycle(_FRAMES):
            if stop.wait(0.1):
                return
            detail = f" ({current.detail})" if current.detail else ""
            sys.stdout.write(f"\r\033[K  {frame} {label}{detail} {current.elapsed()}")
            sys.stdout.flush()

    spinner = threading.Thread(target=spin, daemon=True) if interactive else None
    if spinner:
        spinner.start()
    else:
        print(f"  - {label} ...", flush=True)
    outcome = "failed"
    try:
        yield current
        outcome = current.result
    finally:
        stop.set()
        if spinner:
            spinner.join()
            sys.stdout.write("\r\033[K")
        mark = "x" if outcome == "failed" else "+"
        print(f"  {mark} {label}: {outcome} ({current.elapsed()})", flush=True)


def info(message: str) -> None:
    """A line for the user."""
    print(message, flush=True)


def error(message: str) -> None:
    """A one-line error on stderr."""
    print(f"lab: error: {message}", file=sys.stderr, flush=True)
