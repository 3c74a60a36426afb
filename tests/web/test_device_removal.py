"""Removing devices against a running lab: ``DELETE /api/devices/<room>/<device>`` and
``DELETE /api/devices?room=&prefix=`` take the devices' telemetry, latest values and alarms away, the
broker's retained alarms too, and tell the rules and the pages; a removed device that publishes
again comes back. Hostile requests get a one-line 400 and remove nothing."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import socketio

from labctl.config import ROOT, free_ports
from tests.conftest import RunningLab
from tests.mqtt_helpers import collecting, connect
from tests.web.portal_testing import api_token, publish_as, signed_in_session, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(lab: RunningLab) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {api_token(lab, label='test_device_removal')}"
    return session


def publish_readings(lab: RunningLab, room: str, readings: dict[str, dict[str, float]]) -> None:
    """Publish {device: {attr: value}} as the fleet account."""
    root = lab.env["TOPIC_ROOT"]
    messages = [
        (f"{root}/{room}/{device}/{attr}", json.dumps(value))
        for device, attrs in readings.items()
        for attr, value in attrs.items()
    ]
    publish_as(lab, "LAB_FLEET", messages)


def publish_alarm(lab: RunningLab, room: str, device: str, kind: str) -> None:
    """A retained alarm, as the rules publish it."""
    body = {"type": kind, "severity": "major", "state": "active", "value": 1, "ts": int(time.time() * 1000)}
    publish_as(lab, "MQTT_ADMIN", [(f"alarms/{room}/{device}/{kind}", json.dumps(body))], retain=True)


def retained(lab: RunningLab, topic_filter: str, wait_s: float = 1.0) -> list[str]:
    """Topics the broker holds a retained message for (what a new subscriber gets at once)."""
    client = lab.mqtt_client(lab.env["MQTT_ADMIN_USER"], lab.env["MQTT_ADMIN_PASSWORD"])
    with collecting(client, lab.port("MQTT_PORT"), topic_filter) as collector:
        time.sleep(wait_s)
        return sorted(collector.topics())


def device_names(api: requests.Session, lab: RunningLab, room: str) -> list[str]:
    answer = api.get(f"{lab.portal_url}/api/devices", params={"room": room}, timeout=10)
    assert answer.status_code == 200, answer.text
    return [entry["device"] for entry in answer.json()["devices"]]


def stored_rows(lab: RunningLab, room: str, device: str | None = None) -> int:
    with lab.db() as conn:
        row = conn.execute(
            "SELECT count(*) FROM readings WHERE room = %s AND (%s::text IS NULL OR device = %s)",
            (room, device, device),
        ).fetchone()
    assert row is not None
    return int(str(row[0]))


def alarm_devices(api: requests.Session, lab: RunningLab, room: str) -> list[str]:
    answer = api.get(f"{lab.portal_url}/api/alarms", params={"room": room}, timeout=10)
    assert answer.status_code == 200, answer.text
    return sorted(alarm["device"] for alarm in answer.json()["alarms"])


def write_errors(api: requests.Session, lab: RunningLab) -> float:
    text = api.get(f"{lab.portal_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("portal_write_errors_total "):
            return float(line.split()[1])
    raise AssertionError("portal_write_errors_total is not in /metrics")


def device_url(lab: RunningLab, room: str, device: str) -> str:
    return f"{lab.portal_url}/api/devices/{quote(room, safe='')}/{quote(device, safe='')}"


class RemovedListener:
    """A Socket.IO client collecting ``removed`` events."""

    def __init__(self, lab: RunningLab, token: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.arrived = threading.Event()
        self.client = socketio.Client(reconnection=False)
        self.client.on("removed", self._on_removed)
        self.client.connect(lab.portal_url, auth={"token": token}, transports=["websocket"], wait_timeout=10)

    def _on_removed(self, selection: dict[str, Any]) -> None:
        self.events.append(selection)
        self.arrived.set()


def test_one_device_goes_with_its_telemetry_latest_values_and_alarms_and_may_come_back(
    api: requests.Session, lab: RunningLab, unique_room: str
) -> None:
    publish_readings(
        lab, unique_room, {"gone": {"temperature": 20.5, "humidity": 40}, "kept": {"temperature": 19}}
    )
    publish_alarm(lab, unique_room, "gone", "high_temp")
    publish_alarm(lab, unique_room, "kept", "high_temp")
    wait_for("both devices stored", lambda: device_names(api, lab, unique_room) == ["gone", "kept"])
    wait_for("both alarms stored", lambda: alarm_devices(api, lab, unique_room) == ["gone", "kept"])
    assert stored_rows(lab, unique_room, "gone") == 2
    listener = RemovedListener(lab, str(api.headers["Authorization"]).split()[1])
    errors_before = write_errors(api, lab)
    try:
        answer = api.delete(device_url(lab, unique_room, "gone"), timeout=10)
        assert answer.status_code == 204, answer.text
        assert answer.content == b""
        assert listener.arrived.wait(10), "no removed event reached the live client"
        assert listener.events == [{"room": unique_room, "device": "gone"}]
    finally:
        listener.client.disconnect()

    assert device_names(api, lab, unique_room) == ["kept"]
    assert stored_rows(lab, unique_room, "gone") == 0
    assert stored_rows(lab, unique_room, "kept") == 1
    latest = api.get(f"{lab.portal_url}/api/latest", params={"room": unique_room}, timeout=10).json()
    assert {value["device"] for value in latest["values"]} == {"kept"}
    assert alarm_devices(api, lab, unique_room) == ["kept"]
    assert retained(lab, f"alarms/{unique_room}/#") == [f"alarms/{unique_room}/kept/high_temp"]

    again = api.delete(device_url(lab, unique_room, "gone"), timeout=10)
    assert again.status_code == 404
    assert again.json() == {"error": "no such device"}

    publish_readings(lab, unique_room, {"gone": {"temperature": 22}})
    wait_for("the device back", lambda: device_names(api, lab, unique_room) == ["gone", "kept"])
    assert stored_rows(lab, unique_room, "gone") == 1
    assert write_errors(api, lab) == errors_before, "the writer tripped on ids of the removed device"


def test_a_room_or_a_prefix_goes_at_once(api: requests.Session, lab: RunningLab) -> None:
    tag = uuid.uuid4().hex[:8]
    first, second = f"room-{tag}-a", f"room-{tag}-b"
    prefix = f"sim-{tag}-"
    fleet = {f"{prefix}{n}": {"temperature": float(n)} for n in range(3)}
    publish_readings(lab, first, fleet | {"desk": {"temperature": 1}})
    publish_readings(lab, second, fleet | {"desk": {"temperature": 2}})
    wait_for(
        "stored", lambda: len(device_names(api, lab, first)) == 4 and len(device_names(api, lab, second)) == 4
    )

    answer = api.delete(f"{lab.portal_url}/api/devices", params={"room": first, "prefix": prefix}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"deleted": 3}
    assert device_names(api, lab, first) == ["desk"]
    assert len(device_names(api, lab, second)) == 4

    answer = api.delete(f"{lab.portal_url}/api/devices", params={"prefix": prefix}, timeout=10)
    assert answer.json() == {"deleted": 3}
    assert device_names(api, lab, second) == ["desk"]

    answer = api.delete(f"{lab.portal_url}/api/devices", params={"room": second}, timeout=10)
    assert answer.json() == {"deleted": 1}
    assert device_names(api, lab, second) == []
    assert stored_rows(lab, second) == 0
    assert stored_rows(lab, first) == 1

    nothing = api.delete(f"{lab.portal_url}/api/devices", params={"room": f"room-{tag}-none"}, timeout=10)
    assert nothing.json() == {"deleted": 0}


def test_a_prefix_is_taken_literally(api: requests.Session, lab: RunningLab, unique_room: str) -> None:
    """LIKE's wildcards in a prefix match only themselves."""
    publish_readings(lab, unique_room, {"a%b": {"t": 1}, "a_b": {"t": 1}, "axb": {"t": 1}, "a\\b": {"t": 1}})
    wait_for("stored", lambda: len(device_names(api, lab, unique_room)) == 4)
    for prefix, left in (("a%", ["a\\b", "a_b", "axb"]), ("a_", ["a\\b", "axb"]), ("a\\", ["axb"])):
        answer = api.delete(
            f"{lab.portal_url}/api/devices", params={"room": unique_room, "prefix": prefix}, timeout=10
        )
        assert answer.json() == {"deleted": 1}, prefix
        assert device_names(api, lab, unique_room) == left


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({}, "room or prefix is required: say which devices to remove"),
        ({"prefix": ""}, "prefix must not be empty (to remove a whole room, give only room)"),
        ({"room": ""}, "room is not a valid name: empty name"),
        ({"room": "a/b"}, "room is not a valid name"),
        ({"room": "a+"}, "room is not a valid name"),
        ({"room": "#"}, "room is not a valid name"),
        ({"room": "x" * 201}, "room is not a valid name"),
        ({"room": "bad\x00nul"}, "room is not a valid name"),
        ({"prefix": "a/"}, "prefix cannot begin a valid name"),
        ({"prefix": "\u202e"}, "prefix cannot begin a valid name"),
    ],
)
def test_hostile_bulk_removals_are_refused_and_remove_nothing(
    api: requests.Session, lab: RunningLab, unique_room: str, params: dict[str, str], error: str
) -> None:
    publish_readings(lab, unique_room, {"stay": {"t": 1}})
    wait_for("stored", lambda: device_names(api, lab, unique_room) == ["stay"])
    answer = api.delete(f"{lab.portal_url}/api/devices", params=params, timeout=10)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith(error)
    assert device_names(api, lab, unique_room) == ["stay"]


@pytest.mark.parametrize(
    ("room", "device", "status"),
    [
        ("a+b", "dev", 400),
        ("room", "#", 400),
        ("room", " padded", 400),
        ("room", "x" * 201, 400),
        ("room", "tab\there", 400),
        ("no-such-room", "dev", 404),
    ],
)
def test_hostile_single_removals_are_refused(
    api: requests.Session, lab: RunningLab, room: str, device: str, status: int
) -> None:
    answer = api.delete(device_url(lab, room, device), timeout=10)
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error"}


def test_removal_needs_credentials_and_the_csrf_header(lab: RunningLab, unique_room: str) -> None:
    publish_readings(lab, unique_room, {"stay": {"t": 1}})
    wait_for("stored", lambda: stored_rows(lab, unique_room) == 1)
    anonymous = requests.delete(device_url(lab, unique_room, "stay"), timeout=10)
    assert anonymous.status_code == 401
    session = signed_in_session(
        lab.portal_url, lab.env["PORTAL_ADMIN_USER"], lab.env["PORTAL_ADMIN_PASSWORD"]
    )
    forged = session.delete(f"{lab.portal_url}/api/devices", params={"room": unique_room}, timeout=10)
    assert forged.status_code == 403
    assert stored_rows(lab, unique_room) == 1


def test_the_rules_forget_a_removed_device(api: requests.Session, lab: RunningLab, unique_room: str) -> None:
    """With offline alarms after 1 s, a device removed at once never gets one; a kept one does."""
    admin = lab.mqtt_client(lab.env["MQTT_ADMIN_USER"], lab.env["MQTT_ADMIN_PASSWORD"])
    assert not connect(admin, lab.port("MQTT_PORT")).is_failure
    admin.publish(
        "config/alarms/offline", json.dumps({"offline_after_s": 2}), qos=1, retain=True
    ).wait_for_publish(5)
    try:
        time.sleep(0.5)
        publish_readings(lab, unique_room, {"gone": {"t": 1}, "kept": {"t": 1}})
        wait_for("stored", lambda: device_names(api, lab, unique_room) == ["gone", "kept"])
        assert api.delete(device_url(lab, unique_room, "gone"), timeout=10).status_code == 204
        wait_for("the kept device's offline alarm", lambda: alarm_devices(api, lab, unique_room) == ["kept"])
        time.sleep(1.0)  # the removed device would have had its own by now
        assert alarm_devices(api, lab, unique_room) == ["kept"]
    finally:
        admin.publish("config/alarms/offline", b"", qos=1, retain=True).wait_for_publish(5)
        admin.disconnect()
        admin.loop_stop()


# -- ./lab devices ---------------------------------------------------------------------------------


def lab_devices(lab: RunningLab, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``./lab devices ARGS`` against the test lab (its .env and data folder)."""
    return subprocess.run(
        [
            str(ROOT / "lab"),
            "--env-file",
            str(lab.config.env_file),
            "--data-dir",
            str(lab.config.data_dir),
            "devices",
            *args,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_lab_devices_lists_and_removes(api: requests.Session, lab: RunningLab, unique_room: str) -> None:
    publish_readings(lab, unique_room, {"sim-1": {"t": 1, "h": 2}, "sim-2": {"t": 1}, "desk": {"t": 3}})
    wait_for("stored", lambda: len(device_names(api, lab, unique_room)) == 3)

    listed = lab_devices(lab, "list", "--room", unique_room)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [(row[0], row[1], row[3]) for row in rows] == [
        (unique_room, "desk", "t"),
        (unique_room, "sim-1", "h, t"),
        (unique_room, "sim-2", "t"),
    ]
    assert "3 device(s)" in listed.stderr + listed.stdout

    unasked = lab_devices(lab, "remove", "--room", unique_room, "--prefix", "sim-")
    assert unasked.returncode == 1
    assert "add --yes" in unasked.stderr
    assert "2 device(s) of room" in unasked.stderr
    assert len(device_names(api, lab, unique_room)) == 3

    removed = lab_devices(lab, "remove", "--room", unique_room, "--prefix", "sim-", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert "removed 2 device(s)" in removed.stdout + removed.stderr
    assert device_names(api, lab, unique_room) == ["desk"]

    one = lab_devices(lab, "remove", unique_room, "desk", "--yes")
    assert one.returncode == 0, one.stderr
    assert device_names(api, lab, unique_room) == []

    gone = lab_devices(lab, "remove", unique_room, "desk", "--yes")
    assert gone.returncode == 1
    assert gone.stderr.strip().endswith(f"there is no device 'desk' of room {unique_room!r}")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((), "say which devices to remove"),
        (("room-only",), "name the device too"),
        (("a", "b", "--room", "c"), "give either ROOM DEVICE or --room/--prefix, not both"),
        (("--prefix", ""), "--prefix must not be empty"),
        (("--room", "a/b", "--yes"), "the portal answered 400: room is not a valid name"),
    ],
)
def test_lab_devices_refuses_what_cannot_be_meant(lab: RunningLab, args: tuple[str, ...], error: str) -> None:
    result = lab_devices(lab, "remove", *args)
    assert result.returncode == 1
    assert error in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_lab_devices_says_when_the_portal_is_not_running(tmp_path: Path, lab: RunningLab) -> None:
    env = tmp_path / ".env"
    text = lab.config.env_file.read_text()
    env.write_text(text.replace(f"PORTAL_PORT={lab.port('PORTAL_PORT')}", f"PORTAL_PORT={free_ports(1)[0]}"))
    result = subprocess.run(
        [str(ROOT / "lab"), "--env-file", str(env), "--data-dir", str(tmp_path), "devices", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "cannot be reached" in result.stderr and "./lab up" in result.stderr
