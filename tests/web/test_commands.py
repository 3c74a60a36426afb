"""Commands from the portal: ``POST /api/devices/<room>/<device>/set/<attr>`` publishes on the
device's ``set`` topic, which a simulated device of the stress tool obeys; bad requests are
one-line 400s and nothing is published."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import RunningLab
from tests.mqtt_helpers import connect
from tests.web.portal_testing import api_token, signed_in_session

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bearer(lab: RunningLab) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_token(lab, label='commands')}"}


class Listener:
    """An admin client subscribed to every command of a room."""

    def __init__(self, lab: RunningLab, room: str) -> None:
        self.received: list[tuple[str, bytes, bool]] = []
        self.subscribed = threading.Event()
        self.client = lab.mqtt_client(lab.env["MQTT_ADMIN_USER"], lab.env["MQTT_ADMIN_PASSWORD"])
        self.client.on_message = lambda _c, _u, m: self.received.append(
            (m.topic, bytes(m.payload), bool(m.retain))
        )
        self.client.on_subscribe = lambda *_args: self.subscribed.set()
        assert not connect(self.client, lab.port("MQTT_PORT")).is_failure
        self.client.subscribe(f"{lab.env['TOPIC_ROOT']}/{room}/+/set/#", qos=1)
        assert self.subscribed.wait(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def listener(lab: RunningLab, unique_room: str) -> Iterator[Listener]:
    watching = Listener(lab, unique_room)
    yield watching
    watching.close()


def post(lab: RunningLab, path: str, body: Any, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"{lab.portal_url}/api/devices/{path}", json=body, headers=headers, timeout=10)


@pytest.mark.parametrize("case", [(22.5, b"22.5"), (3, b"3"), (True, b"true"), ("eco", b"eco")])
def test_a_command_is_published_on_the_devices_set_topic(
    lab: RunningLab, bearer: dict[str, str], listener: Listener, unique_room: str, case: tuple[Any, bytes]
) -> None:
    value, payload = case
    answer = post(lab, f"{unique_room}/thermo-1/set/setpoint", {"value": value}, bearer)
    assert answer.status_code == 202, answer.text
    topic = f"{lab.env['TOPIC_ROOT']}/{unique_room}/thermo-1/set/setpoint"
    assert answer.json() == {"topic": topic, "payload": payload.decode()}
    deadline = time.monotonic() + 5
    while not listener.received and time.monotonic() < deadline:
        time.sleep(0.02)
    assert listener.received == [(topic, payload, False)]


@pytest.mark.parametrize(
    "case",
    [
        ("{room}/d/set/setpoint", {"value": None}, "value must be"),
        ("{room}/d/set/setpoint", {"value": [1]}, "value must be"),
        ("{room}/d/set/setpoint", {"value": 1, "extra": 2}, "the body must be"),
        ("{room}/d/set/setpoint", [], "the body must be"),
        ("{room}/d/set/setpoint", {"value": ""}, "value must be 1 to 256"),
        ("{room}/d/set/setpoint", {"value": "x" * 257}, "value must be 1 to 256"),
        ("{room}/d/set/setpoint", {"value": "a\x00b"}, "without NUL"),
        ("{room}%2B/d/set/setpoint", {"value": 1}, "room is not a valid name"),
        ("{room}/%23/set/setpoint", {"value": 1}, "device is not a valid name"),
        ("{room}/d/set/%01", {"value": 1}, "attr is not a valid name"),
    ],
)
def test_bad_commands_are_one_line_and_publish_nothing(
    lab: RunningLab, bearer: dict[str, str], listener: Listener, unique_room: str, case: tuple[str, Any, str]
) -> None:
    path, body, expected = case
    answer = post(lab, path.format(room=unique_room), body, bearer)
    assert answer.status_code == 400, answer.text
    assert expected in answer.json()["error"]
    time.sleep(0.3)
    assert listener.received == []


def test_non_finite_numbers_and_non_json_bodies_are_refused(lab: RunningLab, bearer: dict[str, str]) -> None:
    for raw in (b'{"value": NaN}', b'{"value": Infinity}', b"{oops", b""):
        answer = requests.post(
            f"{lab.portal_url}/api/devices/r/d/set/setpoint",
            data=raw,
            headers={**bearer, "Content-Type": "application/json"},
            timeout=10,
        )
        assert answer.status_code == 400, (raw, answer.text)


def test_commands_need_a_login_and_a_csrf_header(lab: RunningLab) -> None:
    assert post(lab, "r/d/set/setpoint", {"value": 1}, {}).status_code == 401
    session = signed_in_session(
        lab.portal_url, lab.env["PORTAL_ADMIN_USER"], lab.env["PORTAL_ADMIN_PASSWORD"]
    )
    refused = session.post(f"{lab.portal_url}/api/devices/r/d/set/setpoint", json={"value": 1}, timeout=10)
    assert refused.status_code == 403


def test_a_simulated_thermostat_obeys_a_setpoint_from_the_portal(
    lab: RunningLab, bearer: dict[str, str], unique_room: str, tmp_path: Path
) -> None:
    prefix = f"cmd{uuid.uuid4().hex[:4]}"
    device = f"{prefix}00001"
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stress",
            "run",
            "--target",
            "lab",
            "--env-file",
            str(lab.config.env_file),
            "--devices",
            "1",
            "--prefix",
            prefix,
            "--rooms",
            "1",
            "--interval",
            "0.3",
            "--duration",
            "8",
            "--quiet",
            "--out",
            str(tmp_path / "run"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        latest = f"{lab.portal_url}/api/latest"

        def setpoint() -> Any:
            answer = requests.get(
                latest, params={"room": "room-01", "device": device}, headers=bearer, timeout=5
            )
            values = {row["attr"]: row["value"] for row in answer.json()["values"]} if answer.ok else {}
            return values.get("setpoint")

        deadline = time.monotonic() + 10
        while setpoint() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert setpoint() is not None, "the simulated device's readings never reached the portal"
        answer = post(lab, f"room-01/{device}/set/setpoint", {"value": 27.5}, bearer)
        assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + 5
        while setpoint() != 27.5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert setpoint() == 27.5
    finally:
        _out, err = run.communicate(timeout=60)
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "command" and e.get("obeyed") for e in events), err
