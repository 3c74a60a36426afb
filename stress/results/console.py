"""The live view of a run on the terminal: one status line, refreshed every second.

On a terminal the line is redrawn in place with a progress bar; when output goes to a file
or a pipe, one plain line is written every few seconds instead, so logs stay readable.
"""

from __future__ import annotations

import sys
from typing import TextIO

from stress.measure.meter import Second

BAR = 24


class Console:
    """Prints progress from the seconds the run closes."""

    def __init__(self, duration: float, fleet: int, qos: int, stream: TextIO | None = None) -> None:
        self.duration = duration
        #: The fleet size planned, until a second says the size in force.
        self.fleet = fleet
        self.qos = qos
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.run_seconds = 0
        self.errors = 0
        self._drawn = False

    def second(self, second: Second) -> None:
        """Show one closed second."""
        self.errors += sum(second.errors.values())
        if second.phase == "run":
            self.run_seconds += 1
        if not self.tty and second.phase == "run" and self.run_seconds % 5:
            return
        done = min(1.0, self.run_seconds / self.duration) if self.duration else 1.0
        filled = int(done * BAR)
        ack = second.ack.percentile(0.99)
        parts = [
            f"[{'#' * filled}{'.' * (BAR - filled)}] {self.run_seconds:>4}/{self.duration:g} s",
            f"{second.phase:<7}",
            f"written {second.sent:>7,}/s",
        ]
        if self.qos:
            parts.append(f"acknowledged {second.acked:>7,}/s")
            parts.append(f"ack p99 {ack:.1f} ms" if ack is not None else "ack p99 -")
        late = second.lateness.percentile(0.99)
        if late is not None:
            parts.append(f"late p99 {late:.1f} ms")
        if second.devices or second.interval is not None:  # stamped by the run's timeline
            self.fleet = second.devices
        parts.append(f"connected {second.connected:,}/{self.fleet:,}")
        if second.interval is not None:
            parts.append("capacity mode" if second.interval == 0 else f"every {second.interval:g} s")
        parts.append(f"errors {self.errors:,}")
        cpu = 100 * second.cpu_s / second.wall_s if second.wall_s else 0.0
        parts.append(f"cpu {cpu:.0f}%")
        line = "  ".join(parts)
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self._drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def say(self, line: str) -> None:
        """A line of its own (a problem the run met), above the live line."""
        self.stream.write(("\r\033[K" if self._drawn else "") + line + "\n")
        self.stream.flush()
        self._drawn = False

    def end(self) -> None:
        """Finish the live line."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
