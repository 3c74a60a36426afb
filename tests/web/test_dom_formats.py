"""The pages' date and number formats (web/static/lib/dom.js), run in Node.js: made once and kept,
they write what ``toLocaleTimeString()``, ``toLocaleString()`` and a number's ``toLocaleString()``
write, in the locale and time zone of the moment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from labctl.config import ROOT

MODULE = ROOT / "web" / "static" / "lib" / "dom.js"

# For each time: what setTime wrote, and what the Date's own methods write (the time alone today).
SCRIPT = """
import {{ formatCount, setTime, warmFormats }} from {module};
warmFormats();
const times = {times}.map(function (ms) {{
  const shown = {{}};
  setTime(shown, ms);
  const when = new Date(ms);
  const today = when.toDateString() === new Date().toDateString();
  return [shown.textContent, today ? when.toLocaleTimeString() : when.toLocaleString(), shown.dateTime];
}});
const counts = {counts}.map(function (count) {{
  return [formatCount(count), count.toLocaleString()];
}});
console.log(JSON.stringify({{ times: times, counts: counts }}));
"""


def run(times: list[int], counts: list[float], zone: str, language: str) -> dict[str, list[list[str]]]:
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
    answer: dict[str, list[list[str]]] = json.loads(done.stdout)
    return answer


@pytest.mark.parametrize(
    ("zone", "language"),
    [
        ("UTC", "C.UTF-8"),
        ("Europe/Berlin", "de_DE.UTF-8"),
        ("Asia/Kolkata", "hi_IN.UTF-8"),
        ("America/Toronto", "fr_CA.UTF-8"),
    ],
)
def test_times_and_counts_read_as_the_browser_writes_them(zone: str, language: str) -> None:
    now = int(time.time() * 1000)
    times = [now, now - 40_000, now - 3 * 86_400_000, 0, 1_700_000_123_456, 253_402_300_799_000]
    answer = run(times, [0, 7, 1234, 10_000, 1_234_567.5], zone, language)
    for shown, expected, _iso in answer["times"]:
        assert shown == expected
    for written, expected in answer["counts"]:
        assert written == expected
    assert answer["times"][3][2] == "1970-01-01T00:00:00.000Z"
