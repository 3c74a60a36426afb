"""One rule for names, everywhere: readings, alarms, the API, live scopes, Node-RED and the stress tool.

Before, alarm topics were checked by other rules than readings: names that readings accepted
(zero-width, right-to-left and byte-order-mark characters, names over 200 characters) raised
alarms the portal then refused. Every place that takes a name now asks :mod:`wire.names`, and the
Node-RED rules carry the same rule in JavaScript; these tests hold them to agreement.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.datastructures import MultiDict

from tests.web.portal_testing import property_test
from web.alarm_messages import AlarmMessage, parse_alarm
from web.api.fields import Name
from web.api.params import ParamError
from wire.names import MAX_NAME_CHARS, is_valid_name, name_problem
from wire.scopes import Scope, ScopeError
from wire.topics import Topic, parse_topic

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 1, tzinfo=UTC)

GOOD = [
    "lab",
    "salle été",
    "température",
    "<script>",
    "Büro 2.OG",
    "厨房",
    "🌡️",  # an emoji with its variation selector (category Mn)
    "a b",
    "x" * MAX_NAME_CHARS,
    "dev-001_a.b:c@d",
]
BAD = [
    "",
    "x" * (MAX_NAME_CHARS + 1),
    "a/b",
    "+",
    "room#1",
    "lab\x00",
    "\x1b[31mred",
    "del\x7f",
    "c1\x85",
    "sensor\u200b1",  # zero-width space
    "sensor\u200d1",  # zero-width joiner
    "\u202egnp.exe",  # right-to-left override
    "lab\u200e",  # left-to-right mark
    "\ufefflab",  # byte order mark
    "line\u2028break",  # line separator
    "para\u2029",  # paragraph separator
    " lab",
    "lab ",
    "lab\u00a0",  # no-break space at the end
    "\u3000lab",  # ideographic space at the start
    "\ud800",  # a lone surrogate
]


@pytest.mark.parametrize("name", GOOD)
def test_good_names(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize("name", BAD)
def test_bad_names_say_what_is_wrong(name: str) -> None:
    problem = name_problem(name)
    assert problem is not None
    assert "\n" not in problem and len(problem) < 80


def _everywhere(name: str) -> dict[str, bool]:
    """Whether each place that takes a name takes this one."""
    reading = parse_topic(f"office/r/{name}/t".encode("utf-8", "surrogatepass"), "office")
    alarm = parse_alarm(f"alarms/r/{name}/offline", b'{"state": "active"}', NOW)
    try:
        Scope.parse({"scope": "device", "room": "r", "device": name})
        scope = True
    except ScopeError:
        scope = False
    try:
        Name("device", "").read(MultiDict({"device": name}))
        api = True
    except ParamError:
        api = False
    return {
        "reading": isinstance(reading, Topic),
        "alarm": isinstance(alarm, AlarmMessage),
        "live scope": scope,
        "api": api,
    }


@pytest.mark.parametrize("name", [n for n in GOOD + BAD if "/" not in n])
def test_every_place_takes_the_same_names(name: str) -> None:
    assert set(_everywhere(name).values()) == {is_valid_name(name)}


@property_test
@given(st.text(max_size=MAX_NAME_CHARS + 2).filter(lambda s: "/" not in s))
def test_every_place_agrees_on_any_text(name: str) -> None:
    assert set(_everywhere(name).values()) == {is_valid_name(name)}


# -- the Node-RED rules' copy of the rule -------------------------------------------------------


def _flows_name_rule() -> str:
    flows = json.loads((ROOT / "nodered" / "flows.json").read_text())
    source: str = next(node["func"] for node in flows if node.get("name") == "alarm rules")
    start = source.index("// -- names:")
    end = source.index("// -- end of names --")
    return source[start:end]


def _javascript_verdicts(names: list[str]) -> list[bool]:
    program = (
        _flows_name_rule()
        + "\nconst names = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        + "\nprocess.stdout.write(JSON.stringify(names.map((name) => nameProblem(name) === '')));"
    )
    result = subprocess.run(
        ["node", "-e", program],
        input=json.dumps(names),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    verdicts: list[bool] = json.loads(result.stdout)
    return verdicts


def _corpus() -> list[str]:
    # Every character of the planes names are drawn from, alone and inside a name, at the ends too.
    interesting = [chr(code) for code in range(0x20, 0x3100)] + ["\U0001f321", "\U000e0001", "\U000f0000"]
    names = [n for n in GOOD + BAD if n != "\ud800"]  # JSON cannot carry a lone surrogate to node
    for char in interesting:
        names += [f"a{char}b", char, f"{char}ab", f"ab{char}"]
    return names


def test_the_node_red_rules_follow_the_same_rule() -> None:
    names = _corpus()
    disagree = [
        name
        for name, verdict in zip(names, _javascript_verdicts(names), strict=True)
        if verdict != is_valid_name(name)
    ]
    assert not disagree, f"{len(disagree)} names judged differently, e.g. {disagree[:5]!r}"
