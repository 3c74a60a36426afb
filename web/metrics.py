"""The portal's Prometheus metrics, one registry per app (served at ``/metrics``).

Every part of the portal records into the :class:`Metrics` object the app factory creates
(``current_portal().metrics``); nothing uses a global registry, so several apps (tests)
can live in one process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

if TYPE_CHECKING:
    from web.retention import Round

# The *_created series only add noise for a lab's dashboards.
disable_created_metrics()  # type: ignore[no-untyped-call]

_BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """All of the portal's metrics, registered in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ingest_messages = Counter(
            "portal_ingest_messages", "Telemetry messages accepted by ingest", registry=r
        )
        self.ingest_rejected = Counter(
            "portal_ingest_rejected", "Messages rejected by ingest, by reason", ["reason"], registry=r
        )
        self.stored_readings = Counter(
            "portal_stored_readings", "Readings committed to the database", registry=r
        )
        self.batch_size = Histogram(
            "portal_batch_size", "Readings per committed batch", buckets=_BATCH_BUCKETS, registry=r
        )
        self.commit_seconds = Histogram(
            "portal_commit_seconds",
            "Time to write and commit one batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.write_errors = Counter(
            "portal_write_errors", "Batch writes that failed and were retried", registry=r
        )
        self.buffer_depth = Gauge(
            "portal_buffer_depth", "Readings received and not yet handed to the database", registry=r
        )
        self.broker_connected = Gauge("portal_broker_connected", "1 while subscribed", registry=r)
        self.devices = Gauge(
            "portal_devices", "Devices the lab keeps (PORTAL_MAX_DEVICES caps them)", registry=r
        )
        self.live_clients = Gauge("portal_live_clients", "Browsers connected over Socket.IO", registry=r)
        self.live_updates = Counter(
            "portal_live_updates", "Attribute updates pushed to Socket.IO clients", registry=r
        )
        self.live_dropped = Counter(
            "portal_live_dropped",
            "Socket.IO clients dropped because they stopped reading (asleep, stalled or too slow)",
            registry=r,
        )
        self.live_flush_seconds = Histogram(
            "portal_live_flush_seconds",
            "Time to hand one flush of updates to every subscribed Socket.IO client",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.alarms_received = Counter("portal_alarms_received", "Alarm messages received", registry=r)
        self.retention_dropped = Counter(
            "portal_retention_dropped_partitions",
            "Day partitions of telemetry and rollups dropped past RETENTION_DAYS",
            registry=r,
        )
        self.retention_deleted = Counter(
            "portal_retention_deleted_rows",
            "Rows past RETENTION_DAYS deleted from the default partitions (odd timestamps)",
            registry=r,
        )
        self.retention_round = Gauge(
            "portal_retention_last_round_timestamp_seconds",
            "When this portal last finished a retention round (0: none yet)",
            registry=r,
        )

    def count_retention(self, done: Round) -> None:
        """Count what a retention round did."""
        self.retention_dropped.inc(len(done.dropped))
        self.retention_deleted.inc(done.deleted)
        self.retention_round.set_to_current_time()

    def track_devices(self, count: Callable[[], int]) -> None:
        """Report the devices the lab keeps from `count()` each time the metrics are read."""
        self.devices.set_function(count)

    def track_buffer(self, depth: Callable[[], int]) -> None:
        """Report the buffer depth from `depth()` each time the metrics are read."""
        self.buffer_depth.set_function(depth)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
