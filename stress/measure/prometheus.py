"""A run's figures for Prometheus: ``stress run --metrics-port PORT`` serves ``/metrics`` while it runs.

Counters are cumulative over the run (every process's seconds merged, as in the summary);
gauges are those of the last second closed. Latencies are given as quantiles (gauges with a
``quantile`` label) of the last second and of the whole run, from the same bounded histograms
as the summary, with a counter of their samples.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from stress.measure.histogram import Histogram
from stress.measure.meter import Second

#: Quantiles exported for each latency.
QUANTILES = (0.5, 0.95, 0.99)
#: Latencies exported, and what they are.
LATENCIES = {
    "connect": "connection handshakes (TCP, TLS, CONNACK)",
    "ack": "publish to PUBACK (QoS 1)",
    "e2e": "publish to delivery to the end-to-end subscriber",
    "lateness": "how late messages left after they were due",
}
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class RunMetrics:
    """Accumulates a run's closed seconds; ``render`` writes the exposition text."""

    def __init__(self, run_id: str, target: str, fleet: int) -> None:
        self.run_id = run_id
        self.target = target
        self.fleet = fleet
        self.total = Second(-1)
        self.last: Second | None = None
        self.seconds = 0
        #: ``--cluster`` runs: each worker's last second, and its sent messages so far.
        self.workers: dict[str, tuple[Second, int]] = {}

    def worker_second(self, worker: str, second: Second) -> None:
        """One worker's own second (cluster runs), for the per-worker gauges."""
        sent = self.workers[worker][1] if worker in self.workers else 0
        self.workers[worker] = (second, sent + second.sent)

    def second(self, second: Second) -> None:
        """One more closed second (merged over processes)."""
        self.total.merge(second)
        self.last = second
        self.seconds += 1

    def render(self) -> str:
        """The Prometheus text exposition of everything so far."""
        total, last = self.total, self.last
        lines: list[str] = []

        def metric(name: str, kind: str, text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP stress_{name} {text}")
            lines.append(f"# TYPE stress_{name} {kind}")
            lines.extend(f"stress_{name}{labels} {value:g}" for labels, value in samples)

        metric(
            "run_info",
            "gauge",
            "The run in progress (always 1).",
            [(f'{{run_id="{_label(self.run_id)}",target="{_label(self.target)}"}}', 1)],
        )
        phase = last.phase if last is not None else "connect"
        metric("phase", "gauge", "The run's phase (1 for the current one).", [(f'{{phase="{phase}"}}', 1)])
        for name, field, text in (
            ("offered", "offered", "Messages due to be sent."),
            ("sent", "sent", "Messages written to the connection."),
            ("acked", "acked", "Messages acknowledged by the broker (QoS 1 and 2)."),
            ("failed", "failed", "Messages that failed (not connected, refused, timed out...)."),
            ("observed", "delivered", "Messages of the sampled devices seen by the end-to-end observer."),
            ("sampled", "e2e_expected", "Messages the sampled devices wrote (what observed is out of)."),
            ("connects", "connects", "Successful connections."),
            ("disconnects", "disconnects", "Connections lost or ended."),
            ("overruns", "overruns", "Messages sent more than an interval late."),
        ):
            metric(f"{name}_total", "counter", text, [("", getattr(total, field))])
        metric(
            "errors_total",
            "counter",
            "Errors by stage and reason.",
            [
                (f'{{stage="{_label(stage)}",reason="{_label(reason)}"}}', count)
                for (stage, reason), count in sorted(total.errors.items())
            ],
        )
        metric("devices_connected", "gauge", "Devices connected.", [("", last.connected if last else 0)])
        fleet = last.devices if last is not None and last.devices else self.fleet
        metric("devices_fleet", "gauge", "The fleet size asked (in force in the last second).", [("", fleet)])
        cpu = last.cpu_s / last.wall_s if last is not None and last.wall_s else 0.0
        metric(
            "generator_cpu_ratio", "gauge", "CPU of the generator in the last second, in cores.", [("", cpu)]
        )
        lag = last.lag.percentile(0.99) if last is not None else None
        metric(
            "generator_loop_lag_seconds",
            "gauge",
            "Event-loop lag of the generator, p99 of the last second.",
            [("", (lag or 0.0) / 1000)],
        )
        self._render_workers(metric)
        for kind, text in LATENCIES.items():
            samples = []
            for window, second in (("second", last), ("run", total)):
                histogram: Histogram | None = getattr(second, kind) if second is not None else None
                for quantile in QUANTILES:
                    value = histogram.percentile(quantile) if histogram is not None else None
                    if value is not None:
                        samples.append((f'{{window="{window}",quantile="{quantile:g}"}}', value / 1000))
            metric(f"{kind}_latency_seconds", "gauge", f"Latency of {text}.", samples)
            metric(
                f"{kind}_latency_samples_total",
                "counter",
                f"Samples of {text}.",
                [("", getattr(total, kind).count)],
            )
        return "\n".join(lines) + "\n"

    def _render_workers(self, metric: Callable[[str, str, str, list[tuple[str, float]]], None]) -> None:
        """Per-worker figures of a cluster run (nothing otherwise): a saturated worker shows."""
        if not self.workers:
            return
        rows = sorted(self.workers.items())

        def each(value: Callable[[Second, int], float]) -> list[tuple[str, float]]:
            return [(f'{{worker="{_label(name)}"}}', value(second, sent)) for name, (second, sent) in rows]

        metric("worker_sent_total", "counter", "Messages each worker wrote.", each(lambda _s, sent: sent))
        metric(
            "worker_devices_connected",
            "gauge",
            "Devices connected, per worker.",
            each(lambda s, _: s.connected),
        )
        metric(
            "worker_cpu_ratio",
            "gauge",
            "CPU of each worker in its last second, in cores.",
            each(lambda s, _: s.cpu_s / s.wall_s if s.wall_s else 0.0),
        )
        metric(
            "worker_loop_lag_seconds",
            "gauge",
            "Event-loop lag of each worker, p99 of its last second.",
            each(lambda s, _: (s.lag.percentile(0.99) or 0.0) / 1000),
        )


@contextlib.asynccontextmanager
async def serving(metrics: RunMetrics, host: str, port: int) -> AsyncIterator[None]:
    """``GET /metrics`` on ``host:port`` while inside."""

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render().encode(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield
    finally:
        await runner.cleanup()
