"""The stress dashboard in Chromium, beside a run against the lab: live figures, names as text, controls."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import RunningLab
from tests.stress.plain_broker import free_port

pytestmark = pytest.mark.integration

#: A prefix a careless page would turn into markup.
HOSTILE = "<b>x"


@pytest.fixture
def run_with_dashboard(lab: RunningLab, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``stress run --target lab --dashboard`` for up to a minute, with hostile device names."""
    port = free_port()
    run = subprocess.Popen(
        [
            *(sys.executable, "-m", "stress", "run", "--target", "lab"),
            *("--env-file", str(lab.config.env_file), "--prefix", HOSTILE, "--devices", "4"),
            *("--interval", "0.2", "--duration", "60", "--quiet", "--out", str(tmp_path / "run")),
            *("--dashboard", "--dashboard-port", str(port)),
        ],
        env={**os.environ, "STRESS_CONTROL_DIR": str(tmp_path / "control")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while True:
        assert run.poll() is None, run.communicate()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                break
        except OSError:
            assert time.monotonic() < deadline, "the dashboard never answered"
            time.sleep(0.1)
    try:
        yield run, port
    finally:
        if run.poll() is None:
            run.terminate()
        run.communicate(timeout=60)


def open_dashboard(browser: Browser, port: int, errors: list[str]) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"http://127.0.0.1:{port}/")
    return page


def test_the_dashboard_shows_the_run_live_with_device_names_as_text(
    browser: Browser, run_with_dashboard: tuple[subprocess.Popen[str], int]
) -> None:
    run, port = run_with_dashboard
    errors: list[str] = []
    page = open_dashboard(browser, port, errors)
    expect(page.locator("#status")).to_have_attribute("data-state", "live", timeout=20_000)
    expect(page.locator("#connected")).to_have_text("4 / 4", timeout=20_000)
    expect(page.locator("#rate-chart .uplot canvas")).to_be_attached(timeout=10_000)
    first = page.locator("#slowest tr td:first-child").first
    expect(first).to_contain_text(HOSTILE, timeout=10_000)
    names = page.locator("#slowest tr td:first-child").all_text_contents()
    assert names
    assert set(names) <= {f"{HOSTILE}{n:05d}" for n in range(1, 5)}
    assert page.locator("#slowest b, #failing b, #run b").count() == 0  # never parsed as markup

    page.fill("#devices", f"{HOSTILE}00002")
    page.click("#pause")
    expect(page.locator("#answer")).to_contain_text(f"paused {HOSTILE}00002", timeout=10_000)
    page.fill("#devices", "<img src=x onerror=alert(1)>")
    page.click("#pause")
    expect(page.locator("#answer")).to_contain_text("error:", timeout=10_000)
    assert page.locator("#answer img").count() == 0

    page.click("#stop")
    expect(page.locator("#status")).to_have_attribute("data-state", "last", timeout=30_000)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr
    assert errors == [], "JavaScript errors on the dashboard"


def test_the_dashboard_shows_each_cluster_worker_and_steers_them_all(
    browser: Browser, lab: RunningLab, tmp_path: Path
) -> None:
    """A fleet over two Dask workers: a row per worker, live and after the run; scale acts on both."""
    port = free_port()
    run = subprocess.Popen(
        [
            *(sys.executable, "-m", "stress", "run", "--target", "lab", "--cluster", "local:2"),
            *("--env-file", str(lab.config.env_file), "--prefix", "dashclu", "--devices", "4"),
            *("--interval", "0.5", "--duration", "60", "--quiet", "--out", str(tmp_path / "run")),
            *("--dashboard", "--dashboard-port", str(port)),
        ],
        env={**os.environ, "STRESS_CONTROL_DIR": str(tmp_path / "control")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        errors: list[str] = []
        deadline = time.monotonic() + 60
        while True:
            assert run.poll() is None, run.communicate()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the dashboard never answered"
                time.sleep(0.2)
        page = open_dashboard(browser, port, errors)
        expect(page.locator("#connected")).to_have_text("4 / 4", timeout=60_000)
        workers = page.locator("#workers tr")
        expect(workers).to_have_count(2, timeout=20_000)
        expect(page.locator("#workers tr td:nth-child(3)").first).to_have_text("2", timeout=10_000)
        page.fill("#size", "8")
        page.click("#scale-form button")
        expect(page.locator("#connected")).to_contain_text("8", timeout=30_000)
        expect(page.locator("#workers tr td:nth-child(3)").nth(0)).to_have_text("4", timeout=10_000)
        expect(page.locator("#workers tr td:nth-child(3)").nth(1)).to_have_text("4", timeout=10_000)
        page.click("#stop")
        expect(page.locator("#status")).to_have_attribute("data-state", "last", timeout=60_000)
        expect(workers).to_have_count(2, timeout=10_000)  # the finished run, worker by worker
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 0, stderr
        assert errors == [], "JavaScript errors on the dashboard"
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
