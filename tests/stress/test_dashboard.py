"""``stress dashboard``: a run pushed live to Socket.IO clients, its controls, and the last run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio

from tests.stress.plain_broker import PlainBroker, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A control directory of this test's own, shared by the run and the dashboard."""
    control = tmp_path / "control"
    return {**os.environ, "STRESS_CONTROL_DIR": str(control)}


def wait_healthy(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while True:
        assert process.poll() is None, process.communicate()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return
        except OSError:
            assert time.monotonic() < deadline, "the dashboard never answered"
            time.sleep(0.1)


@pytest.fixture
def dashboard(tmp_path: Path, env: dict[str, str]) -> Iterator[int]:
    port = free_port()
    runs = tmp_path / "runs"
    runs.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "stress", "dashboard", "--port", str(port), "--runs", str(runs)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_healthy(port, process)
    yield port
    process.terminate()
    process.communicate(timeout=10)


class Browser:
    """A Socket.IO client that keeps what the dashboard pushes."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, Any]] = []
        self.changed = threading.Condition()
        self.client = socketio.Client()
        for name in ("state", "started", "ended", "second", "event", "failing", "change"):
            self.client.on(name, self._keeper(name))
        self.client.connect(f"http://127.0.0.1:{port}", wait_timeout=10)

    def _keeper(self, name: str) -> Any:
        def keep(data: Any) -> None:
            with self.changed:
                self.messages.append((name, data))
                self.changed.notify_all()

        return keep

    def wait_for(self, name: str, test: Any = lambda _data: True, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for got, data in self.messages:
                    if got == name and test(data):
                        return data
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no {name} within {timeout}s: {[m for m, _ in self.messages]}"
                self.changed.wait(remaining)

    def of(self, name: str) -> list[Any]:
        with self.changed:
            return [data for got, data in self.messages if got == name]

    def close(self) -> None:
        self.client.disconnect()


def start_run(broker: PlainBroker, out: Path, env: dict[str, str], *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "stress", "run", "--target", "mqtt", "--port", str(broker.port)),
            *("--interval", "0.2", "--qos", "1", "--quiet", "--out", str(out), *flags),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_dashboard_pushes_a_run_and_its_controls_act(
    dashboard: int, broker: PlainBroker, tmp_path: Path, env: dict[str, str]
) -> None:
    browser = Browser(dashboard)
    try:
        waiting = browser.wait_for("state")
        assert waiting["live"] is False
        assert waiting["run"] is None  # no run folder yet
        run = start_run(broker, tmp_path / "runs" / "live", env, "--devices", "8", "--duration", "30")
        started = browser.wait_for("started")
        assert started["live"] is True
        assert started["run"]["run_id"] == "live"
        browser.wait_for("second", lambda s: s["phase"] == "run" and s["connected"] == 8)
        paused = browser.client.call("control", {"op": "pause", "devices": ["dev00003"]}, timeout=10)
        assert paused == {"ok": True, "message": "run live: paused dev00003; 1 paused in all"}
        assert browser.wait_for("event", lambda e: e["event"] == "paused")["device"] == "dev00003"
        refused = browser.client.call(
            "control", {"op": "pause", "devices": ["<script>x</script>"]}, timeout=10
        )
        assert refused["ok"] is False
        assert "not devices of this run" in refused["error"]
        unknown = browser.client.call("control", {"op": "reboot"}, timeout=10)
        assert unknown["ok"] is False
        assert browser.client.call("control", "stop", timeout=10)["ok"] is False  # not an object
        scaled = browser.client.call("control", {"op": "scale", "devices": 4}, timeout=10)
        assert scaled["ok"] is True
        browser.wait_for("second", lambda s: s["connected"] == 4)
        assert browser.wait_for("change", lambda c: c["what"] == "scale")["text"] == "scale to 4 devices"
        assert browser.wait_for("second", lambda s: s["devices"] == 4)["interval_s"] == 0.2
        stopped = browser.client.call("control", {"op": "stop"}, timeout=10)
        assert stopped["ok"] is True
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 0, stderr
        ended = browser.wait_for("ended")
        assert ended["run"]["run_id"] == "live"
        assert ended["run"]["summary"]["stopped"] == "stress stop"
        assert [change["what"] for change in started["timeline"]] == ["start"]
        pushed = [change["what"] for change in browser.of("change")]
        assert pushed == ["pause", "scale", "stop"]
        assert [c["text"] for c in ended["run"]["timeline"]] == [
            "start: 8 devices every 0.2 s",
            "pause 1 device (1 paused)",
            "scale to 4 devices",
            "stop",
        ]
        assert ended["run"]["summary"]["devices"] == 4
        seconds = [s["t"] for s in browser.of("second")]
        assert seconds == list(range(seconds[0], seconds[0] + len(seconds)))  # every second, in order
        summary = json.loads((tmp_path / "runs" / "live" / "summary.json").read_text())
        assert sum(s["acked"] for s in started["seconds"] + browser.of("second")) == summary["acked"]
        assert any(s["slowest"] for s in browser.of("second"))
    finally:
        browser.close()


def test_a_page_opened_later_gets_the_last_run(
    dashboard: int, broker: PlainBroker, tmp_path: Path, env: dict[str, str]
) -> None:
    run = start_run(broker, tmp_path / "runs" / "earlier", env, "--devices", "3", "--duration", "2")
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr
    deadline = time.monotonic() + 10
    while True:  # the dashboard may still be saying goodbye to the run
        browser = Browser(dashboard)
        state = browser.wait_for("state")
        browser.close()
        if not state["live"]:
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert state["run"]["run_id"] == "earlier"
    assert state["run"]["summary"]["devices"] == 3
    assert [s["phase"] for s in state["seconds"]][-1] == "drain"
    assert sum(s["acked"] for s in state["seconds"]) == state["run"]["summary"]["acked"]


def test_a_finished_runs_report_is_served(
    dashboard: int, broker: PlainBroker, tmp_path: Path, env: dict[str, str]
) -> None:
    run = start_run(broker, tmp_path / "runs" / "done", env, "--devices", "2", "--duration", "2")
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr
    browser = Browser(dashboard)
    state = browser.wait_for("state")
    browser.close()
    assert state["run"]["report"] == "report/done"
    with urllib.request.urlopen(f"http://127.0.0.1:{dashboard}/report/done", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/html")
        page = answer.read().decode()
    assert "<h1>Stress run done</h1>" in page
    assert page == (tmp_path / "runs" / "done" / "report.html").read_text(encoding="utf-8")
    (tmp_path / "runs" / "done" / "report.html").unlink()  # not written yet: made when asked
    with urllib.request.urlopen(f"http://127.0.0.1:{dashboard}/report/done", timeout=10) as answer:
        assert "<h1>Stress run done</h1>" in answer.read().decode()
    assert not (tmp_path / "runs" / "done" / "report.html").exists()
    for unknown in ("nothing", "..", "%2e%2e%2fetc"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://127.0.0.1:{dashboard}/report/{unknown}", timeout=10)
        assert caught.value.code == 404


def test_stress_run_dashboard_serves_its_own_run(
    broker: PlainBroker, tmp_path: Path, env: dict[str, str]
) -> None:
    port = free_port()
    run = start_run(
        broker,
        tmp_path / "runs" / "own",
        env,
        *("--devices", "4", "--duration", "6", "--dashboard", "--dashboard-port", str(port)),
    )
    try:
        wait_healthy(port, run)
        browser = Browser(port)
        browser.wait_for("second", lambda s: s["phase"] == "run")
        browser.close()
    finally:
        _, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr
    assert f"stress: dashboard at http://127.0.0.1:{port}/" in stderr
    with pytest.raises(OSError):  # the dashboard went with the run
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_a_taken_port_is_one_line(tmp_path: Path) -> None:
    import socket  # noqa: PLC0415

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "stress", "dashboard", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"stress dashboard: error: cannot serve the dashboard on 127.0.0.1:{port}: Address already in use"
        " (choose another --port)"
    )


def test_a_missing_browser_library_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stress.cli.dashboard import check_libraries  # noqa: PLC0415
    from web import vendor  # noqa: PLC0415

    check_libraries()  # the checkout's, after npm ci
    monkeypatch.setattr(vendor, "ASSETS_DIR", tmp_path)  # an install built without them
    with pytest.raises(
        OSError, match=r"socket\.io\.min\.js is missing .*: run `npm ci` in web/assets"
    ) as caught:
        check_libraries()
    assert "\n" not in str(caught.value)
