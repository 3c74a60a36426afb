"""Presence the MQTT way, against real labs: a stress fleet that ends cleanly says goodbye (stopped,
no offline alarm); a device whose connection is cut is lost at once (its Last Will); presence that
is not a state is refused, an empty retained one is not; and the offline alarm stays right across
a Node-RED restart and a broker outage."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from labctl.config import LabConfig
from stress.mqtt import codec
from stress.mqtt.codec import ConnectOptions
from stress.mqtt.session import open_session
from stress.targets.lab import PRESENCE_ATTR as STRESS_PRESENCE_ATTR
from tests.conftest import RunningLab, own_lab
from tests.web.portal_testing import api_token, publish_as, wait_for
from web.presence import PRESENCE_ATTR

pytestmark = pytest.mark.integration

WAIT_S = 20.0  # the offline alarm after a restart: the rules' threshold, their start, a tick


def test_the_stress_tool_and_the_portal_name_the_same_presence_topic() -> None:
    assert STRESS_PRESENCE_ATTR == PRESENCE_ATTR == "$state"


def api_of(lab: RunningLab) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {api_token(lab, label=f'presence-{uuid.uuid4().hex[:6]}')}"
    return session


@pytest.fixture(scope="module")
def api(lab: RunningLab) -> requests.Session:
    return api_of(lab)


def devices_of(
    api: requests.Session, lab: RunningLab, prefix: str, room: str | None = None
) -> list[dict[str, Any]]:
    """The devices whose name starts with ``prefix`` (of ``room``), at most 1,000."""
    params = {"prefix": prefix, "limit": "1000", **({"room": room} if room else {})}
    answer = api.get(f"{lab.portal_url}/api/devices", params=params, timeout=10)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["devices"])


def offline_alarms(api: requests.Session, lab: RunningLab, room: str, device: str | None = None) -> list[Any]:
    params = {"room": room, "type": "offline", "state": "active", **({"device": device} if device else {})}
    answer = api.get(f"{lab.portal_url}/api/alarms", params=params, timeout=10)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["alarms"])


def admin_publish(lab: RunningLab, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
    publish_as(lab, "MQTT_ADMIN", [(topic, payload)], retain=retain)


def offline_after(lab: RunningLab, seconds: float | None) -> None:
    """Override the rules' offline threshold (None: back to rules.json)."""
    body = b"" if seconds is None else json.dumps({"offline_after_s": seconds}).encode()
    admin_publish(lab, "config/alarms/offline", body, retain=True)


@pytest.fixture
def fast_offline(lab: RunningLab) -> Iterator[None]:
    offline_after(lab, 2)
    time.sleep(0.5)
    yield
    offline_after(lab, None)


def test_a_fleet_that_ends_cleanly_is_stopped_and_raises_no_offline_alarm(
    api: requests.Session, lab: RunningLab, tmp_path: Path, fast_offline: None
) -> None:
    prefix = f"p{uuid.uuid4().hex[:6]}-"
    run = subprocess.run(
        [
            *(
                sys.executable,
                "-m",
                "stress",
                "run",
                "--target",
                "lab",
                "--env-file",
                str(lab.config.env_file),
            ),
            *("--prefix", prefix, "--devices", "4", "--rooms", "1", "--interval", "0.5", "--duration", "2"),
            *("--quiet", "--e2e-devices", "0", "--out", str(tmp_path / "run")),
        ],
        env={**os.environ, "STRESS_CONTROL_DIR": str(tmp_path / "control")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    fleet = wait_for(
        "every device stopped",
        lambda: [d for d in devices_of(api, lab, prefix) if (d["presence"] or {}).get("state") == "offline"],
    )
    assert len(fleet) == 4
    assert all(device["last_seen"] is not None for device in fleet)
    assert all(device["presence"]["at"] >= device["last_seen"] - 5_000 for device in fleet)
    time.sleep(4)  # twice the offline threshold: a device that vanished would have its alarm
    assert [a["device"] for a in offline_alarms(api, lab, "room-01") if a["device"].startswith(prefix)] == []


def test_a_device_whose_connection_is_cut_is_lost_at_once(
    api: requests.Session, lab: RunningLab, unique_room: str
) -> None:
    """Its Last Will: presence lost and the offline alarm within seconds, not after the 60 s threshold."""
    device = f"cut-{uuid.uuid4().hex[:6]}"
    root = lab.env["TOPIC_ROOT"]
    presence = codec.TopicCode(f"{root}/{unique_room}/{device}/{PRESENCE_ATTR}")
    reading = codec.TopicCode(f"{root}/{unique_room}/{device}/temperature")
    options = ConnectOptions(
        client_id=device,
        username=lab.env["LAB_FLEET_USER"],
        password=lab.env["LAB_FLEET_PASSWORD"],
        will=codec.Will(presence.topic, b'{"value":"lost"}'),
    )

    async def live_then_cut() -> None:
        session = await open_session("127.0.0.1", lab.port("MQTT_PORT"), options)
        now_ms = time.time() * 1000
        session.write(presence.publish(b'{"value":"online","ts":%d}' % now_ms, retain=True), 0.0)
        session.write(reading.publish(b"21.5"), 0.0)
        await asyncio.sleep(1.0)
        session.abort()

    asyncio.run(live_then_cut())
    (listed,) = wait_for(
        "lost",
        lambda: [d for d in devices_of(api, lab, device) if (d["presence"] or {}).get("state") == "lost"],
    )
    assert listed["room"] == unique_room
    (alarm,) = wait_for("the offline alarm", lambda: offline_alarms(api, lab, unique_room, device))
    assert alarm["severity"] == "major"


def test_presence_that_is_not_a_state_is_refused_and_an_empty_one_ignored(
    api: requests.Session, lab: RunningLab, unique_room: str
) -> None:
    def rejected(reason: str) -> float:
        for line in api.get(f"{lab.portal_url}/metrics", timeout=10).text.splitlines():
            if line.startswith(f'portal_ingest_rejected_total{{reason="{reason}"}}'):
                return float(line.split()[1])
        return 0.0

    root = lab.env["TOPIC_ROOT"]
    before = rejected("presence"), rejected("empty")
    admin_publish(lab, f"{root}/{unique_room}/dev/{PRESENCE_ATTR}", "sleeping")
    admin_publish(lab, f"{root}/{unique_room}/dev/{PRESENCE_ATTR}", "", retain=True)
    admin_publish(lab, f"{root}/{unique_room}/ok/{PRESENCE_ATTR}", "online")
    wait_for(
        "the good one stored",
        lambda: devices_of(api, lab, "ok", unique_room) and rejected("presence") == before[0] + 1,
    )
    assert rejected("empty") == before[1], "an empty retained presence (a removal) is not a rejection"
    names = {d["device"]: d["presence"] for d in devices_of(api, lab, "", unique_room)}
    assert list(names) == ["ok"] and names["ok"]["state"] == "online"


# -- across restarts (labs of their own) ---------------------------------------------------------------


@pytest.fixture
def rules_lab(new_lab_config: Callable[..., LabConfig]) -> Iterator[RunningLab]:
    with own_lab(new_lab_config, "presence-restarts", ("db", "mosquitto", "web", "nodered")) as running:
        offline_after(running, 3)
        time.sleep(0.5)
        yield running


def speak(lab: RunningLab, room: str, device: str) -> None:
    publish_as(lab, "LAB_FLEET", [(f"{lab.env['TOPIC_ROOT']}/{room}/{device}/temperature", "20")])


def test_a_device_silent_while_the_rules_were_down_gets_its_alarm_after_they_restart(
    rules_lab: RunningLab,
) -> None:
    api = api_of(rules_lab)
    speak(rules_lab, "r", "quiet")
    time.sleep(1.0)  # heard by the rules, and on their disk (written every 5 s, and at a clean stop)
    rules_lab.lab.stop("nodered")
    time.sleep(4)  # past the threshold while nobody watches
    assert offline_alarms(api, rules_lab, "r") == []
    rules_lab.lab.start("nodered")
    (alarm,) = wait_for(
        "the offline alarm after the restart", lambda: offline_alarms(api, rules_lab, "r"), WAIT_S
    )
    assert alarm["device"] == "quiet"


def test_an_outage_of_the_broker_raises_no_alarm_it_cannot_deliver_and_the_silent_get_theirs_after(
    rules_lab: RunningLab,
) -> None:
    api = api_of(rules_lab)
    speak(rules_lab, "r", "gone")
    time.sleep(1.0)
    rules_lab.lab.stop("mosquitto")
    time.sleep(5)  # past the threshold: before, the rules "raised" the alarm here, into a closed connection
    rules_lab.lab.start("mosquitto")
    (alarm,) = wait_for(
        "the offline alarm after the outage", lambda: offline_alarms(api, rules_lab, "r"), WAIT_S
    )
    assert alarm["device"] == "gone"
