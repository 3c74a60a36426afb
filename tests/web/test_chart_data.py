"""The device page's chart data (web/static/lib/chart-data.js), run in Node.js: the precision of
raw values, and the line broken where a device was silent instead of drawn across the silence."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from labctl.config import ROOT

MODULE = ROOT / "web" / "static" / "lib" / "chart-data.js"


def run(expression: str) -> Any:
    """The JSON value of `expression`, evaluated in Node.js with the module's exports in scope."""
    node = shutil.which("node")
    assert node is not None, "Node.js runs Node-RED here; it must be installed"
    script = (
        f"import * as chart from {json.dumps(MODULE.as_uri())};\nconsole.log(JSON.stringify({expression}));"
    )
    done = subprocess.run(
        [node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    ("value", "decimals"),
    [(21, 0), (21.5, 1), (37.63333333333333, 6), (0.25, 2), (-3.125, 3), (1e-7, 6), (1e21, 0)],
)
def test_the_precision_is_what_the_value_is_written_with(value: float, decimals: int) -> None:
    assert run(f"chart.decimalsOf({json.dumps(value)})") == decimals


def test_a_silence_breaks_the_line_and_regular_points_do_not() -> None:
    xs = [0, 60, 120, 180, 1000, 1060]
    columns = [xs, [1, 2, 3, 4, 5, 6], [None] * 6, [None] * 6]
    gap = run(f"chart.gapFor({json.dumps(xs)}, 15)")
    assert gap == 180  # three times the usual spacing of 60 s (more than twice the 15 s bucket)
    drawn = run(f"chart.withGaps({json.dumps(columns)}, {gap})")
    assert drawn[0] == [0, 60, 120, 180, 590, 1000, 1060]
    assert drawn[1] == [1, 2, 3, 4, None, 5, 6]
    assert run(f"chart.withGaps({json.dumps(columns)}, 1e9)") == columns


def test_with_few_points_the_bucket_sets_the_gap() -> None:
    assert run("chart.gapFor([100], 30)") == 90
    assert run("chart.gapFor([], 30)") == 90
