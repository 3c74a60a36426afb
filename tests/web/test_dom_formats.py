"""The pages' time and count formats (web/static/lib/dom.js), run in Node.js: one fixed form whatever
the locale (24-hour local time, the ISO date before it on another day, thousands apart with a
comma), checked against the same times written by Python in the same time zone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from labctl.config import ROOT

MODULE = ROOT / "web" / "static" / "lib" / "dom.js"

# For each time: what setTime wrote in the element, its machine-readable time, and formatTime.
SCRIPT = """
import {{ formatCount, formatTime, setTime }} from {module};
const times = {times}.map(function (ms) {{
  const shown = {{}};
  setTime(shown, ms);
  return [shown.textContent, shown.dateTime === undefined ? null : shown.dateTime, formatTime(ms)];
}});
const counts = {counts}.map(formatCount);
console.log(JSON.stringify({{ times: times, counts: counts }}));
"""


def run(times: list[float], counts: list[float], zone: str, language: str) -> dict[str, list[Any]]:
    node = shutil.which("node")
    assert node is not None, "Node.js runs Node-RED here; it must be installed"
    script = SCRIPT.format(
        module=json.dumps(MODULE.as_uri()), times=json.dumps(times), counts=json.dumps(counts)
    )
    environment = {**os.environ, "TZ": zone, "LANG": language, "LC_ALL": language}
    done = subprocess.run(
        [node, "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=environment,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, list[Any]] = json.loads(done.stdout)
    return answer


def written(ms: int, zone: str) -> str:
    """The time as a page should show it: the time of day today, with the date another day."""
    when = datetime.fromtimestamp(ms / 1000, ZoneInfo(zone))
    if when.date() == datetime.now(ZoneInfo(zone)).date():
        return when.strftime("%H:%M:%S")
    return f"{when.year:04d}-{when:%m-%d %H:%M:%S}"


@pytest.mark.parametrize(
    ("zone", "language"),
    [
        ("UTC", "C.UTF-8"),
        ("Europe/Berlin", "de_DE.UTF-8"),
        ("Asia/Kolkata", "hi_IN.UTF-8"),
        ("America/Toronto", "fr_CA.UTF-8"),
    ],
)
def test_times_read_the_same_in_every_locale(zone: str, language: str) -> None:
    now = int(time.time() * 1000)
    # Now, 40 s ago, three days ago, 1970, a morning (one-digit hour), the last second of 9998 (UTC).
    times = [
        now,
        now - 40_000,
        now - 3 * 86_400_000,
        0,
        1_700_000_123_456,
        1_699_945_205_000,
        253_370_764_799_000,
    ]
    answer = run([float(ms) for ms in times], [], zone, language)
    for ms, (shown, iso, text) in zip(times, answer["times"], strict=True):
        expected = written(ms, zone)
        assert (shown, text) == (expected, expected), ms
        assert (
            iso
            == datetime.fromtimestamp(ms / 1000, ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{ms % 1000:03d}Z"
        )
    assert answer["times"][0][0].count(":") == 2 and "-" not in answer["times"][0][0], "today: the time alone"


def test_a_time_that_is_not_one_writes_nothing() -> None:
    answer = run([float("nan"), 8.64e15 + 1], [], "UTC", "C.UTF-8")
    assert answer["times"] == [["", None, ""], ["", None, ""]]


def test_counts_have_their_thousands_apart() -> None:
    answer = run(
        [],
        [0, 7, 999, 1000, 1234, 10_000, 999_999, 1_234_567.5, -1234, -12, 12_345_678_901],
        "UTC",
        "de_DE.UTF-8",
    )
    assert answer["counts"] == [
        "0",
        "7",
        "999",
        "1,000",
        "1,234",
        "10,000",
        "999,999",
        "1,234,567.5",
        "-1,234",
        "-12",
        "12,345,678,901",
    ]
