"""When the load generator, not the server, is the bottleneck.

A process of the stress tool is *saturated* while it uses most of a core or its event loop runs
late: then its own delay is in every latency it measures. The run's seconds (``summary.json``,
per process and per cluster worker) and the portal viewers (``stress viewers``) both say so by
this one rule.
"""

from __future__ import annotations

#: The share of one core a saturated process uses, at least.
SATURATED_CPU = 0.9
#: How late (seconds) a saturated process's event loop runs, at least.
SATURATED_LAG_S = 0.1
#: A run (or a worker) is saturated when at least this share of its publishing seconds were.
SATURATED_SHARE = 0.2


def saturated_by(cpu_share: float, lag_s: float) -> bool:
    """Whether a process that used ``cpu_share`` of a core, its loop ``lag_s`` late, is saturated."""
    return cpu_share >= SATURATED_CPU or lag_s >= SATURATED_LAG_S
