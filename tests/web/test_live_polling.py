"""Subscriptions sent before the live connection upgrades to WebSocket: a page that lists its 48
devices at once sends 48 subscribe messages in one long-polling request, and every one of them
is answered with its snapshot (Engine.IO used to refuse any request of more than 16 messages,
dropping them all, so that page never got a live value)."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.conftest import RunningLab
from tests.web.portal_testing import publish_as, signed_in_session, wait_for
from web.live import POLLING_MESSAGES_MAX

pytestmark = pytest.mark.integration

RECORD_SEPARATOR = "\x1e"  # between Engine.IO packets in one long-polling body


def test_every_subscription_in_one_polling_request_gets_its_snapshot(
    lab: RunningLab, unique_room: str
) -> None:
    devices = [f"d{n:02}" for n in range(48)]
    publish_as(
        lab,
        "LAB_FLEET",
        [(f"office/{unique_room}/{device}/t", f'{{"value": {n}}}') for n, device in enumerate(devices)],
    )
    session = signed_in_session(
        lab.portal_url, lab.env["PORTAL_ADMIN_USER"], lab.env["PORTAL_ADMIN_PASSWORD"]
    )
    polling = f"{lab.portal_url}/socket.io/?EIO=4&transport=polling"

    def stored() -> bool:
        answer = session.get(f"{lab.portal_url}/api/latest", params={"room": unique_room}, timeout=10)
        return answer.ok and len(answer.json()["values"]) == len(devices)

    wait_for("the values stored", stored)
    opened = session.get(polling, timeout=10)
    sid = json.loads(opened.text[1:])["sid"]
    at = f"{polling}&sid={sid}"
    subscribes = [
        "42" + json.dumps(["subscribe", {"scope": "device", "room": unique_room, "device": device}])
        for device in devices
    ]
    sent = session.post(at, data=RECORD_SEPARATOR.join(["40", *subscribes]), timeout=10)

    assert sent.status_code == 200, sent.text
    seen: set[str] = set()
    deadline = time.monotonic() + 20
    while len(seen) < len(devices) and time.monotonic() < deadline:
        for packet in session.get(at, timeout=30).text.split(RECORD_SEPARATOR):
            if packet.startswith("42"):
                event, *args = json.loads(packet[2:])
                if event == "snapshot":
                    seen.update(value["device"] for value in args[0] if value["room"] == unique_room)
    assert seen == set(devices)


def test_a_request_of_more_messages_than_a_client_may_ever_need_is_dropped_whole(lab: RunningLab) -> None:
    admin = (lab.env["PORTAL_ADMIN_USER"], lab.env["PORTAL_ADMIN_PASSWORD"])
    session = signed_in_session(lab.portal_url, *admin)
    polling = f"{lab.portal_url}/socket.io/?EIO=4&transport=polling"
    at = f"{polling}&sid={json.loads(session.get(polling, timeout=10).text[1:])['sid']}"
    refused = '42["subscribe",{"scope":"nowhere"}]'  # each one processed gets an error back
    flood = ["40"] + [refused] * (POLLING_MESSAGES_MAX + 1)
    assert session.post(at, data=RECORD_SEPARATOR.join(flood), timeout=10).ok  # 200, and dropped whole

    assert session.post(at, data=RECORD_SEPARATOR.join(["40", refused]), timeout=10).ok
    received: list[str] = []
    deadline = time.monotonic() + 20
    while not any(packet.startswith('42["error"') for packet in received) and time.monotonic() < deadline:
        received += session.get(at, timeout=30).text.split(RECORD_SEPARATOR)
    errors = [packet for packet in received if packet.startswith('42["error"')]
    assert len(errors) == 1, received
    assert requests.get(f"{lab.portal_url}/healthz", timeout=10).ok
