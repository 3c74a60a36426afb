"""``stress run --metrics-port``: the run's figures for Prometheus while it runs."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stress.measure.meter import Second
from stress.measure.prometheus import RunMetrics
from tests.stress.plain_broker import PlainBroker, free_port


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of ``/metrics``, parsed by Prometheus's own parser: name -> labels -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


@pytest.mark.integration
def test_metrics_are_served_while_the_run_goes_and_count_up(broker: PlainBroker, tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "run"
    run = subprocess.Popen(
        [
            *(sys.executable, "-m", "stress", "run", "--target", "mqtt", "--port", str(broker.port)),
            *("--devices", "10", "--interval", "0.2", "--duration", "5", "--qos", "1", "--quiet"),
            *("--metrics-port", str(port), "--out", str(out)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        first = None
        while first is None or first["stress_sent_total"][()] == 0:
            assert time.monotonic() < deadline, "no /metrics with messages sent"
            try:
                first = scrape(port)
            except OSError:
                time.sleep(0.1)
                continue
            time.sleep(0.3)
        time.sleep(1.5)
        second = scrape(port)
    finally:
        _, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr
    assert first["stress_run_info"] == {(("run_id", "run"), ("target", "mqtt")): 1.0}
    assert second["stress_sent_total"][()] > first["stress_sent_total"][()]
    assert second["stress_acked_total"][()] > 0
    assert second["stress_devices_connected"][()] == 10
    assert second["stress_phase"] == {(("phase", "run"),): 1.0}
    quantiles = second["stress_ack_latency_seconds"]
    assert (("quantile", "0.99"), ("window", "run")) in quantiles
    summary = json.loads((out / "summary.json").read_text())
    assert second["stress_sent_total"][()] <= summary["sent"]
    assert second["stress_connect_latency_samples_total"][()] == summary["latency_ms"]["connect"]["count"]


def test_errors_with_awkward_reasons_are_escaped() -> None:
    metrics = RunMetrics('a "run"\nid', "mqtt", 5)
    one = Second(0, errors={("connect", 'say "no"\\'): 2})
    one.ack.record(0.004)
    metrics.second(one)
    samples = {
        sample.name: sample
        for family in text_string_to_metric_families(metrics.render())
        for sample in family.samples
    }
    assert samples["stress_errors_total"].labels == {"stage": "connect", "reason": 'say "no"\\'}
    assert samples["stress_errors_total"].value == 2
    assert samples["stress_run_info"].labels["run_id"] == 'a "run"\nid'


def test_a_metrics_port_in_use_is_one_line_before_anything_runs(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                *(sys.executable, "-m", "stress", "run", "--target", "mqtt", "--metrics-port", str(port)),
                *("--out", str(tmp_path / "run")),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"stress run: error: --metrics-port: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert not (tmp_path / "run").exists()
