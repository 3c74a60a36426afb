"""Units of measure: the units file, and units sent in payloads, as the API shows them (the newest
unit a device sent wins over the file; a payload without one changes nothing)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import RunningLab
from tests.web.portal_testing import api_token, publish_as
from web.settings import SettingsError
from web.units import UNITS_FILE, load_units


def test_the_shipped_units_file_loads() -> None:
    units = load_units()
    assert units["temperature"] == "°C"
    assert units["humidity"] == "%"
    assert not any(name.startswith("_") for name in units), "comments are not units"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{", "cannot read the units file"),
        ("[]", "must be a JSON object"),
        ('{"t": 1}', "the unit of 't' must be 1 to 16 printable characters"),
        ('{"t": ""}', "the unit of 't' must be"),
        ('{"t": "seventeen chars!!"}', "the unit of 't' must be"),
        ('{"t": "a\\u0000"}', "the unit of 't' must be"),
    ],
)
def test_a_bad_units_file_is_one_line(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "units.json"
    path.write_text(text)
    with pytest.raises(SettingsError, match=error) as raised:
        load_units(path)
    assert "\n" not in str(raised.value)


def test_the_units_file_travels_with_the_package() -> None:
    assert UNITS_FILE.is_file()
    assert UNITS_FILE.parent.name == "web"


@pytest.fixture(scope="module")
def api(lab: RunningLab) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {api_token(lab, label='test_units')}"
    return session


def publish(lab: RunningLab, room: str, messages: list[tuple[str, str, dict[str, Any]]]) -> None:
    root = lab.env["TOPIC_ROOT"]
    publish_as(
        lab,
        "LAB_FLEET",
        [(f"{root}/{room}/{device}/{attr}", json.dumps(body)) for device, attr, body in messages],
    )


def units_of(api: requests.Session, lab: RunningLab, room: str) -> dict[tuple[str, str], Any]:
    answer = api.get(f"{lab.portal_url}/api/devices", params={"room": room}, timeout=10)
    assert answer.status_code == 200, answer.text
    return {(d["device"], a["attr"]): a["unit"] for d in answer.json()["devices"] for a in d["attributes"]}


@pytest.mark.integration
def test_a_sent_unit_wins_over_the_file_and_the_newest_wins(
    api: requests.Session, lab: RunningLab, unique_room: str
) -> None:
    now = int(time.time() * 1000)
    publish(
        lab,
        unique_room,
        [
            ("a", "humidity", {"value": 55, "unit": "%RH", "ts": now - 2000}),
            ("a", "humidity", {"value": 56, "ts": now - 1000}),  # no unit: keeps %RH
            ("b", "humidity", {"value": 40}),  # the file's %
            ("b", "zzz", {"value": 1}),  # neither
            ("c", "t", {"value": 1, "unit": "K", "ts": now - 1000}),
            ("c", "t", {"value": 2, "unit": "°F", "ts": now - 5000}),  # older: K stays
        ],
    )
    publish(
        lab, unique_room, [("c", "t", {"value": 3, "unit": "°F", "ts": now - 9000})]
    )  # a later batch, older still
    deadline = time.monotonic() + 10
    while len(units_of(api, lab, unique_room)) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    assert units_of(api, lab, unique_room) == {
        ("a", "humidity"): "%RH",
        ("b", "humidity"): "%",
        ("b", "zzz"): None,
        ("c", "t"): "K",
    }
    history = api.get(
        f"{lab.portal_url}/api/history",
        params={"room": unique_room, "device": "a", "attr": "humidity"},
        timeout=10,
    ).json()
    assert history["unit"] == "%RH"
