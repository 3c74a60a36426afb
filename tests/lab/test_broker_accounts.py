"""Device accounts added while the broker runs, through the admin account's control topic."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest

from tests.conftest import RunningLab
from tests.mqtt_helpers import collecting, connect, granted_qos, publish

pytestmark = pytest.mark.integration

CONTROL = "$CONTROL/dynamic-security/v1"


def dynsec(lab: RunningLab, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send commands to the dynamic security plugin as the admin; returns its responses."""
    client = lab.mqtt_client(lab.env["MQTT_ADMIN_USER"], lab.env["MQTT_ADMIN_PASSWORD"])
    answered = threading.Event()
    responses: list[dict[str, Any]] = []

    def on_message(_c: object, _u: object, message: Any) -> None:
        responses.extend(json.loads(message.payload)["responses"])
        answered.set()

    client.on_message = on_message
    assert not connect(client, lab.port("MQTT_PORT")).is_failure
    client.subscribe(f"{CONTROL}/response", qos=1)
    client.publish(CONTROL, json.dumps({"commands": commands}), qos=1)
    try:
        assert answered.wait(5), "no answer from the dynamic security plugin"
    finally:
        client.disconnect()
        client.loop_stop()
    return responses


def add_device(lab: RunningLab, device: str, password: str) -> None:
    root = lab.env["TOPIC_ROOT"]
    responses = dynsec(
        lab,
        [
            {
                "command": "createRole",
                "rolename": f"device:{device}",
                "acls": [{"acltype": "publishClientSend", "topic": f"{root}/+/{device}/#", "allow": True}],
            },
            {
                "command": "createClient",
                "username": device,
                "password": password,
                "roles": [{"rolename": f"device:{device}"}],
            },
        ],
    )
    assert [r.get("error") for r in responses] == [None, None], responses


def test_device_added_at_run_time_publishes_and_survives_a_broker_restart(
    lab: RunningLab, unique_room: str
) -> None:
    device, password = f"lamp-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    add_device(lab, device, password)
    topic = f"{lab.env['TOPIC_ROOT']}/{unique_room}/{device}/brightness"
    watcher = lab.mqtt_client("portal", lab.env["MQTT_PORTAL_PASSWORD"])
    with collecting(watcher, lab.port("MQTT_PORT"), f"{lab.env['TOPIC_ROOT']}/{unique_room}/#") as seen:
        publish(lab.mqtt_client(device, password), lab.port("MQTT_PORT"), topic, "80")
        assert seen.wait_for(topic) == b"80"

    lab.lab.stop("mosquitto")
    lab.lab.start("mosquitto")  # re-renders the seeded accounts; the added one must stay

    client = lab.mqtt_client(device, password)
    reason = connect(client, lab.port("MQTT_PORT"))
    client.disconnect()
    client.loop_stop()
    assert not reason.is_failure, "the account added at run time is kept across restarts"


def test_only_the_admin_may_manage_accounts(lab: RunningLab) -> None:
    device, password = lab.device
    codes = granted_qos(lab.mqtt_client(device, password), lab.port("MQTT_PORT"), [f"{CONTROL}/#"])
    assert codes == [0x80]
