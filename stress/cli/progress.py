"""A progress bar for long work (provisioning thousands of devices, say).

On a terminal the bar is redrawn in place at most ten times a second; when output goes to a
file or a pipe, a plain line is written at every tenth of the work instead.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


class Progress:
    """``with Progress(total, "creating accounts") as bar: bar.advance(n)``; drawn once work is done."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total = max(total, 0)
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.done = 0
        self.started = time.monotonic()
        self._drawn_at = 0.0
        self._tenth = -1

    def __enter__(self) -> Progress:
        return self  # drawn from the first advance, so an error before any work stands alone

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def advance(self, count: int = 1) -> None:
        """``count`` more items are done."""
        self.done = min(self.total, self.done + count) if self.total else self.done + count
        self._draw()

    def close(self) -> None:
        """Show the final state and end the line (nothing if no work was done)."""
        if not self.done:
            return
        self._draw(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def line(self) -> str:
        """The bar as text: ``label [#####.....] 50/100 (50%) 12/s``."""
        share = self.done / self.total if self.total else 1.0
        filled = int(share * WIDTH)
        elapsed = time.monotonic() - self.started
        rate = f"  {self.done / elapsed:,.0f}/s" if elapsed > 0.5 and self.done else ""
        return (
            f"{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] "
            f"{self.done:,}/{self.total:,} ({share:.0%}){rate}"
        )

    def _draw(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            if force or now - self._drawn_at >= 0.1:
                self._drawn_at = now
                self.stream.write("\r\033[K" + self.line())
                self.stream.flush()
            return
        tenth = int(10 * self.done / self.total) if self.total else 10
        if force and tenth == self._tenth:
            return
        if force or tenth > self._tenth:
            self._tenth = tenth
            self.stream.write(self.line() + "\n")
            self.stream.flush()
