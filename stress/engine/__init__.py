"""The fleet engine of one process (:mod:`stress.engine.core`) and its jobs."""

from __future__ import annotations

from stress.engine.core import Engine, new_loop

__all__ = ["Engine", "new_loop"]
