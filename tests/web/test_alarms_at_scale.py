"""Alarms at scale against a running lab: filters, paging with ``before``, the header's counts,
acknowledging and clearing in bulk (by ids or by filters, with their history and live events),
``raised_at`` kept from the raise; hostile filters and bodies get a one-line 400 and change nothing."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import socketio

from tests.conftest import RunningLab
from tests.web.portal_testing import api_token, publish_as, wait_for

pytestmark = pytest.mark.integration

SEVERITIES = ("critical", "major", "minor", "warning")


@pytest.fixture(scope="module")
def api(lab: RunningLab) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {api_token(lab, label='test_alarms_at_scale')}"
    return session


def publish_alarms(lab: RunningLab, messages: list[tuple[str, dict[str, Any]]]) -> None:
    """(topic, body) pairs as the rules publish them (not retained)."""
    publish_as(lab, "MQTT_ADMIN", [(topic, json.dumps(body)) for topic, body in messages])


def alarm(
    room: str, device: str, kind: str, severity: str, ts: int, *, state: str = "active"
) -> tuple[str, dict[str, Any]]:
    body = {"type": kind, "severity": severity, "state": state, "value": 1, "ts": ts}
    return f"alarms/{room}/{device}/{kind}", body


def listing(api: requests.Session, lab: RunningLab, **params: Any) -> dict[str, Any]:
    answer = api.get(f"{lab.portal_url}/api/alarms", params=params, timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


@pytest.fixture
def fleet_alarms(api: requests.Session, lab: RunningLab, unique_room: str) -> list[dict[str, Any]]:
    """40 active alarms in the room: 20 devices, types hot and cold, the four severities in turn."""
    now = int(time.time() * 1000)
    messages = [
        alarm(unique_room, f"d{n:02}", kind, SEVERITIES[(n + k) % 4], now - n * 1000)
        for n in range(20)
        for k, kind in enumerate(("hot", "cold"))
    ]
    publish_alarms(lab, messages)
    wait_for("the alarms stored", lambda: listing(api, lab, room=unique_room)["total"] == 40)
    return list(listing(api, lab, room=unique_room)["alarms"])


def ids(alarms: list[dict[str, Any]], keep: Callable[[dict[str, Any]], bool]) -> list[int]:
    """The ids of the alarms ``keep`` keeps, newest first (as the API lists them)."""
    return [a["id"] for a in alarms if keep(a)]


FILTERS: list[tuple[dict[str, str], Callable[[dict[str, Any]], bool]]] = [
    ({"severity": "critical"}, lambda a: a["severity"] == "critical"),
    (
        {"severity": "critical,minor", "type": "hot"},
        lambda a: a["severity"] in ("critical", "minor") and a["type"] == "hot",
    ),
    ({"device": "d03"}, lambda a: a["device"] == "d03"),
    ({"type": "cold", "severity": "warning"}, lambda a: a["type"] == "cold" and a["severity"] == "warning"),
    ({"state": "cleared"}, lambda _a: False),
    ({"acked": "false"}, lambda _a: True),
    ({"acked": "true"}, lambda _a: False),
]


def test_filters_narrow_and_pages_cover_every_alarm_once(
    api: requests.Session, lab: RunningLab, unique_room: str, fleet_alarms: list[dict[str, Any]]
) -> None:
    assert [a["id"] for a in fleet_alarms] == sorted((a["id"] for a in fleet_alarms), reverse=True)
    for params, keep in FILTERS:
        found = listing(api, lab, room=unique_room, **params)
        expected = ids(fleet_alarms, keep)
        assert [a["id"] for a in found["alarms"]] == expected, params
        assert found["total"] == len(expected), params
    assert 0 < len(ids(fleet_alarms, lambda a: a["severity"] == "critical")) < 40

    seen: list[int] = []
    before = None
    pages = 0
    while True:
        page = listing(api, lab, room=unique_room, limit=7, **({"before": before} if before else {}))
        assert page["total"] == 40
        seen += [a["id"] for a in page["alarms"]]
        pages += 1
        before = page["next"]
        if before is None:
            break
        assert before == page["alarms"][-1]["id"]
    assert pages == 6
    assert seen == [a["id"] for a in fleet_alarms]


def summary_agrees(api: requests.Session, lab: RunningLab) -> None:
    """The header's counts are the totals of the lists (the whole lab's: other tests' devices raise
    alarms meanwhile, so they are compared until one reading of both agrees)."""

    def agreeing() -> bool:
        counts = api.get(f"{lab.portal_url}/api/alarms/summary", timeout=10).json()
        active = listing(api, lab, state="active", limit=1)["total"]
        unacked = listing(api, lab, state="active", acked="false", limit=1)["total"]
        return bool(counts == {"active": active, "unacked": unacked})

    wait_for("the summary agrees with the alarm lists", agreeing)


def test_bulk_acknowledge_by_ids_and_clear_by_filter(
    api: requests.Session, lab: RunningLab, unique_room: str, fleet_alarms: list[dict[str, Any]]
) -> None:
    chosen = [a["id"] for a in fleet_alarms[:5]]
    answer = api.post(f"{lab.portal_url}/api/alarms/ack", json={"ids": chosen}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"acknowledged": 5}
    again = api.post(f"{lab.portal_url}/api/alarms/ack", json={"ids": chosen}, timeout=10)
    assert again.json() == {"acknowledged": 0}, "a second acknowledgement changes nothing"
    acked = listing(api, lab, room=unique_room, acked="true")
    assert sorted(a["id"] for a in acked["alarms"]) == sorted(chosen)
    assert {a["acked_by"] for a in acked["alarms"]} == {lab.env["PORTAL_ADMIN_USER"]}
    history = api.get(f"{lab.portal_url}/api/alarms/{chosen[0]}", timeout=10).json()["events"]
    assert [(e["kind"], e["actor"]) for e in history] == [
        ("raised", None),
        ("acked", lab.env["PORTAL_ADMIN_USER"]),
    ]

    summary_agrees(api, lab)

    chosen_filter = {"room": unique_room, "type": "cold", "severity": ["critical", "major"]}
    to_clear = ids(fleet_alarms, lambda a: a["type"] == "cold" and a["severity"] in ("critical", "major"))
    cleared = api.post(f"{lab.portal_url}/api/alarms/clear", json=chosen_filter, timeout=10)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json() == {"cleared": len(to_clear)}
    left = listing(api, lab, room=unique_room, state="active")
    assert left["total"] == 40 - len(to_clear)
    assert [a["id"] for a in listing(api, lab, room=unique_room, state="cleared")["alarms"]] == to_clear
    done = listing(api, lab, room=unique_room, state="cleared")["alarms"]
    assert {a["cleared_by"] for a in done} == {lab.env["PORTAL_ADMIN_USER"]}
    summary_agrees(api, lab)


class Listener:
    """A Socket.IO client collecting ``alarm`` and ``alarms`` events."""

    def __init__(self, lab: RunningLab, token: str) -> None:
        self.single: list[dict[str, Any]] = []
        self.bulk: list[dict[str, Any]] = []
        self.arrived = threading.Event()
        self.client = socketio.Client(reconnection=False)
        self.client.on("alarm", self.single.append)
        self.client.on("alarms", self._on_bulk)
        self.client.connect(lab.portal_url, auth={"token": token}, transports=["websocket"], wait_timeout=10)

    def _on_bulk(self, notice: dict[str, Any]) -> None:
        self.bulk.append(notice)
        self.arrived.set()


@pytest.fixture
def listener(api: requests.Session, lab: RunningLab) -> Iterator[Listener]:
    listening = Listener(lab, str(api.headers["Authorization"]).split()[1])
    yield listening
    listening.client.disconnect()


def test_a_big_bulk_change_is_one_notice_and_a_small_one_each_alarm(
    api: requests.Session, lab: RunningLab, unique_room: str, listener: Listener
) -> None:
    now = int(time.time() * 1000)
    publish_alarms(lab, [alarm(unique_room, f"s{n:03}", "flood", "warning", now) for n in range(150)])
    wait_for("stored", lambda: listing(api, lab, room=unique_room)["total"] == 150)
    few = [a["id"] for a in listing(api, lab, room=unique_room, limit=3)["alarms"]]
    assert api.post(f"{lab.portal_url}/api/alarms/ack", json={"ids": few}, timeout=10).json() == {
        "acknowledged": 3
    }
    wait_for(
        "three alarm events",
        lambda: len([e for e in listener.single if e["id"] in few and e["acked_at"]]) == 3,
    )
    answer = api.post(f"{lab.portal_url}/api/alarms/clear", json={"room": unique_room}, timeout=30)
    assert answer.json() == {"cleared": 150}
    assert listener.arrived.wait(15), "no alarms notice after clearing 150"
    assert listener.bulk == [{"count": 150}]


def test_raised_at_stays_when_the_alarm_is_updated(
    api: requests.Session, lab: RunningLab, unique_room: str
) -> None:
    raised = int(time.time() * 1000) - 60_000
    publish_alarms(lab, [alarm(unique_room, "boiler", "hot", "minor", raised)])
    wait_for("raised", lambda: listing(api, lab, room=unique_room)["total"] == 1)
    publish_alarms(lab, [alarm(unique_room, "boiler", "hot", "critical", raised + 30_000)])
    updated = wait_for(
        "updated",
        lambda: [a for a in listing(api, lab, room=unique_room)["alarms"] if a["severity"] == "critical"],
    )
    assert updated[0]["raised_at"] == raised
    assert updated[0]["ts"] == raised + 30_000


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"state": "open"}, "state must be one of active, cleared, all"),
        ({"severity": "fatal"}, "severity must be among critical, major, minor, warning"),
        ({"severity": "critical,"}, "severity must be among"),
        ({"type": ",".join(f"t{n}" for n in range(51))}, "type must name 1 to 50 values"),
        ({"type": "a/b"}, "type holds a name that is not valid"),
        ({"room": "#"}, "room is not a valid name"),
        ({"acked": "yes"}, "acked must be true or false"),
        ({"before": "0"}, "before must be between 1 and"),
        ({"before": "abc"}, "before must be a whole number"),
        ({"before": str(2**63)}, "before must be between 1 and"),
        ({"limit": "0"}, "limit must be between 1 and"),
    ],
)
def test_hostile_filters_are_refused(
    api: requests.Session, lab: RunningLab, params: dict[str, str], error: str
) -> None:
    answer = api.get(f"{lab.portal_url}/api/alarms", params=params, timeout=10)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith(error)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (None, "the body must be a JSON object"),
        ([], "the body must be a JSON object"),
        ({}, "the body must be a JSON object"),
        ({"ids": []}, "ids must be a list of 1 to 10,000 alarm ids"),
        ({"ids": [1, "2"]}, "ids must be a list"),
        ({"ids": [True]}, "ids must be a list"),
        ({"ids": [0]}, "ids must be a list"),
        ({"ids": [2**63]}, "ids must be a list"),
        ({"ids": [1.5]}, "ids must be a list"),
        ({"ids": list(range(1, 10_002))}, "ids must be a list"),
        ({"ids": "1,2"}, "ids must be a list"),
        ({"ids": [1], "state": "active"}, "give ids or filters, not both"),
        ({"everything": True}, "unknown field 'everything'"),
        ({"state": "gone"}, "state must be one of"),
        ({"severity": [1]}, "severity must hold names"),
        ({"severity": {"a": 1}}, "severity must be a name"),
        ({"room": 7}, "room must be a name"),
        ({"acked": "maybe"}, "acked must be true or false"),
    ],
)
def test_hostile_bulk_bodies_are_refused_and_change_nothing(
    api: requests.Session, lab: RunningLab, unique_room: str, body: Any, error: str
) -> None:
    now = int(time.time() * 1000)
    publish_alarms(lab, [alarm(unique_room, "stay", "hot", "major", now)])
    wait_for("stored", lambda: listing(api, lab, room=unique_room)["total"] == 1)
    for action in ("ack", "clear"):
        answer = api.post(f"{lab.portal_url}/api/alarms/{action}", json=body, timeout=10)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"].startswith(error)
    (kept,) = listing(api, lab, room=unique_room)["alarms"]
    assert kept["state"] == "active" and kept["acked_at"] is None


def test_a_body_that_is_not_json_is_refused(api: requests.Session, lab: RunningLab) -> None:
    answer = api.post(f"{lab.portal_url}/api/alarms/clear", data=b"\xff\x00not json", timeout=10)
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("the body must be a JSON object")
