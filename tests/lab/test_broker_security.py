"""The broker's accounts and ACLs, on a real Mosquitto started by the lab fixture."""

from __future__ import annotations

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from tests.conftest import RunningLab
from tests.mqtt_helpers import collecting, connect, granted_qos, publish

pytestmark = pytest.mark.integration


def test_anonymous_connection_is_refused(lab: RunningLab) -> None:
    client = lab.mqtt_client(None, None)
    reason = connect(client, lab.port("MQTT_PORT"))
    client.loop_stop()
    assert reason.is_failure
    assert reason.getName() == "Not authorized"  # MQTT 3.1.1 CONNACK 5


@pytest.mark.parametrize(
    "username",
    ["sensor1", "portal", "nodered", "admin", "nobody"],
)
def test_wrong_password_is_refused(lab: RunningLab, username: str) -> None:
    client = lab.mqtt_client(username, "not-the-password")
    reason = connect(client, lab.port("MQTT_PORT"))
    client.loop_stop()
    assert reason.is_failure


@pytest.mark.parametrize(
    ("variable", "username"),
    [("MQTT_PORTAL_PASSWORD", "portal"), ("MQTT_NODERED_PASSWORD", "nodered"), ("MQTT_ADMIN_PASSWORD", None)],
)
def test_service_accounts_log_in(lab: RunningLab, variable: str, username: str | None) -> None:
    client = lab.mqtt_client(username or lab.env["MQTT_ADMIN_USER"], lab.env[variable])
    reason = connect(client, lab.port("MQTT_PORT"))
    client.disconnect()
    client.loop_stop()
    assert not reason.is_failure


def test_device_publishes_only_under_its_own_id(lab: RunningLab, unique_room: str) -> None:
    device, password = lab.device
    root = lab.env["TOPIC_ROOT"]
    own = f"{root}/{unique_room}/{device}/temperature"
    other = f"{root}/{unique_room}/someone-else/temperature"
    watcher = lab.mqtt_client("portal", lab.env["MQTT_PORTAL_PASSWORD"])
    with collecting(watcher, lab.port("MQTT_PORT"), f"{root}/{unique_room}/#") as seen:
        # MQTT 5 tells the publisher why: PUBACK reason 135, not authorised.
        v5 = lab.mqtt_client(device, password, MQTTProtocolVersion.MQTTv5)
        acks: list[int] = []
        v5.on_publish = lambda _c, _u, _mid, reason, _p: acks.append(reason.value)
        publish(v5, lab.port("MQTT_PORT"), other, "99")
        # MQTT 3.1.1 has no way to say it; the broker drops the message.
        publish(lab.mqtt_client(device, password), lab.port("MQTT_PORT"), other, "98")
        publish(lab.mqtt_client(device, password), lab.port("MQTT_PORT"), own, "21.5")
        assert seen.wait_for(own) == b"21.5"
    assert acks == [135]
    assert other not in seen.topics()


def test_device_reads_only_its_own_commands(lab: RunningLab, unique_room: str) -> None:
    device, password = lab.device
    root = lab.env["TOPIC_ROOT"]
    codes = granted_qos(
        lab.mqtt_client(device, password),
        lab.port("MQTT_PORT"),
        [f"{root}/{unique_room}/{device}/set/#", f"{root}/{unique_room}/other/set/#", f"{root}/#"],
    )
    assert codes == [1, 0x80, 0x80]  # own commands granted at QoS 1; the rest refused


def test_the_fleet_account_publishes_and_reads_under_the_root_only(lab: RunningLab, unique_room: str) -> None:
    root = lab.env["TOPIC_ROOT"]
    fleet = (lab.env["LAB_FLEET_USER"], lab.env["LAB_FLEET_PASSWORD"])
    codes = granted_qos(
        lab.mqtt_client(*fleet),
        lab.port("MQTT_PORT"),
        [f"{root}/#", "alarms/#", "$CONTROL/dynamic-security/#", "#"],
    )
    assert codes == [1, 0x80, 0x80, 0x80]
    topic = f"{root}/{unique_room}/any-device/temperature"
    watcher = lab.mqtt_client("portal", lab.env["MQTT_PORTAL_PASSWORD"])
    with collecting(watcher, lab.port("MQTT_PORT"), f"{root}/{unique_room}/#") as seen:
        publish(lab.mqtt_client(*fleet), lab.port("MQTT_PORT"), topic, "20.5")
        assert seen.wait_for(topic) == b"20.5"
