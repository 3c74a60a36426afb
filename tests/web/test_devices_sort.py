"""``GET /api/devices?sort=offline``: the longest silent devices first (never seen, then the oldest
last-seen time), paged with cursors that cover every device once; hostile sorts and cursors refused."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import requests

from tests.conftest import RunningLab
from tests.web.portal_testing import api_token, publish_as

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(lab: RunningLab) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {api_token(lab, label='test_devices_sort')}"
    return session


def publish(lab: RunningLab, messages: list[tuple[str, str]]) -> None:
    publish_as(lab, "LAB_FLEET", messages)


def page(api: requests.Session, lab: RunningLab, **params: str | int) -> dict[str, Any]:
    answer = api.get(f"{lab.portal_url}/api/devices", params=params, timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_offline_first_and_its_pages(api: requests.Session, lab: RunningLab, unique_room: str) -> None:
    root = lab.env["TOPIC_ROOT"]
    order = ["d3", "d1", "d4", "d0", "d2"]  # the order they speak in: d3 longest silent
    publish(lab, [(f"{root}/{unique_room}/ghost/$state", "online")])  # never seen: first of all
    for device in order:
        publish(lab, [(f"{root}/{unique_room}/{device}/t", "1")])
        time.sleep(0.05)  # each its own last-seen time
    deadline = time.monotonic() + 10
    while page(api, lab, room=unique_room)["total"] < 6 and time.monotonic() < deadline:
        time.sleep(0.1)
    everything = page(api, lab, room=unique_room, sort="offline")
    assert [d["device"] for d in everything["devices"]] == ["ghost", *order]
    assert [d["device"] for d in page(api, lab, room=unique_room)["devices"]] == sorted(["ghost", *order])

    seen: list[str] = []
    cursor: str | None = None
    while True:
        asked: dict[str, str | int] = {"room": unique_room, "sort": "offline", "limit": 2}
        if cursor:
            asked["cursor"] = cursor
        got = page(api, lab, **asked)
        seen += [d["device"] for d in got["devices"]]
        cursor = got["next"]
        if cursor is None:
            break
    assert seen == ["ghost", *order]


def forged(parts: list[str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"sort": "loudest"}, "sort must be one of name, offline"),
        (
            {"sort": "offline", "cursor": forged(["room", "device"])},
            "cursor is not a cursor this API gave out",
        ),
        (
            {"sort": "offline", "cursor": forged(["yesterday", "r", "d"])},
            "cursor is not a cursor this API gave out",
        ),
        ({"cursor": forged(["-infinity", "r", "d"])}, "cursor is not a cursor this API gave out"),
    ],
)
def test_hostile_sorts_and_cursors_are_refused(
    api: requests.Session, lab: RunningLab, params: dict[str, str], error: str
) -> None:
    answer = api.get(f"{lab.portal_url}/api/devices", params=params, timeout=10)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith(error)
