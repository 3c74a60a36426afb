"""The ThingsBoard emulator answers as ThingsBoard's documentation says, to clients that are not
``stress`` (requests and paho-mqtt), so the stress tests rest on behaviour checked on its own."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import requests
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tests.tbemu.emulator import Emulator

USER, PASSWORD = "tenant@thingsboard.org", "tenant"


@pytest.fixture
def tb() -> Iterator[Emulator]:
    with Emulator(USER, PASSWORD, token_ttl_s=900.0) as emulator:
        yield emulator


def login(tb: Emulator) -> dict[str, str]:
    answer = requests.post(
        f"{tb.url}/api/auth/login", json={"username": USER, "password": PASSWORD}, timeout=5
    )
    assert answer.status_code == 200
    return {"X-Authorization": f"Bearer {answer.json()['token']}"}


def create(tb: Emulator, headers: dict[str, str], name: str, **extra: Any) -> dict[str, Any]:
    body = {"name": name, **extra}
    answer = requests.post(f"{tb.url}/api/device", json=body, headers=headers, timeout=5)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


class Device:
    """A paho client logged in with a token; what it receives."""

    def __init__(self, tb: Emulator, token: str, version: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311):
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=token[:8], protocol=version)
        self.client.username_pw_set(token)
        self.received: list[tuple[str, Any]] = []
        self.connack: list[Any] = []
        self.disconnects: list[Any] = []
        self.ready = threading.Event()
        self.client.on_connect = self._connected
        self.client.on_message = lambda _c, _u, m: self.received.append((m.topic, json.loads(m.payload)))
        self.client.on_disconnect = lambda _c, _u, _f, reason, _p: self.disconnects.append(reason)
        self.client.connect(tb.mqtt_host, tb.mqtt_port)
        self.client.loop_start()
        assert self.ready.wait(5)

    def _connected(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _properties: Any) -> None:
        self.connack.append(reason)
        self.ready.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_login_errors_expiry_and_refresh(tb: Emulator) -> None:
    wrong = requests.post(f"{tb.url}/api/auth/login", json={"username": USER, "password": "x"}, timeout=5)
    assert wrong.status_code == 401 and wrong.json()["errorCode"] == 10
    assert requests.get(f"{tb.url}/api/tenant/devices?pageSize=1&page=0", timeout=5).json()["errorCode"] == 10
    pair = requests.post(
        f"{tb.url}/api/auth/login", json={"username": USER, "password": PASSWORD}, timeout=5
    ).json()
    headers = {"X-Authorization": f"Bearer {pair['token']}"}
    assert requests.get(f"{tb.url}/api/tenant/devices?pageSize=1&page=0", headers=headers, timeout=5).ok
    tb.expire_tokens()
    expired = requests.get(f"{tb.url}/api/tenant/devices?pageSize=1&page=0", headers=headers, timeout=5)
    assert expired.status_code == 401 and expired.json()["errorCode"] == 11
    renewed = requests.post(
        f"{tb.url}/api/auth/token", json={"refreshToken": pair["refreshToken"]}, timeout=5
    )
    assert renewed.status_code == 200 and renewed.json()["token"] != pair["token"]


def test_devices_created_listed_found_and_deleted(tb: Emulator) -> None:
    headers = login(tb)
    for number in range(1, 6):
        create(tb, headers, f"Boiler-{number}")
    create(tb, headers, "kitchen")
    duplicate = requests.post(f"{tb.url}/api/device", json={"name": "kitchen"}, headers=headers, timeout=5)
    assert duplicate.status_code == 400 and duplicate.json()["errorCode"] == 31
    page = requests.get(
        f"{tb.url}/api/tenant/devices",
        params={"pageSize": "2", "page": "1", "textSearch": "boiler"},
        headers=headers,
        timeout=5,
    ).json()
    assert [d["name"] for d in page["data"]] == ["Boiler-3", "Boiler-4"]
    assert page["totalElements"] == 5 and page["totalPages"] == 3 and page["hasNext"]
    found = requests.get(
        f"{tb.url}/api/tenant/devices", params={"deviceName": "kitchen"}, headers=headers, timeout=5
    )
    device_id = found.json()["id"]["id"]
    credentials = requests.get(
        f"{tb.url}/api/device/{device_id}/credentials", headers=headers, timeout=5
    ).json()
    assert credentials["credentialsType"] == "ACCESS_TOKEN" and len(credentials["credentialsId"]) == 20
    assert requests.delete(f"{tb.url}/api/device/{device_id}", headers=headers, timeout=5).ok
    missing = requests.get(
        f"{tb.url}/api/tenant/devices", params={"deviceName": "kitchen"}, headers=headers, timeout=5
    )
    assert missing.status_code == 404 and missing.json()["errorCode"] == 32


def test_http_telemetry_and_its_errors(tb: Emulator) -> None:
    headers = login(tb)
    create(tb, headers, "meter")
    token = tb.device("meter").token  # type: ignore[union-attr]
    url = f"{tb.url}/api/v1/{token}/telemetry"
    assert requests.post(url, json={"ts": 1_700_000_000_000, "values": {"power": 3}}, timeout=5).ok
    assert requests.post(url, json={"power": 4}, timeout=5).ok
    assert [v for _ts, v in tb.telemetry("meter")] == [{"power": 3}, {"power": 4}]
    assert requests.post(f"{tb.url}/api/v1/nope/telemetry", json={"a": 1}, timeout=5).status_code == 401
    assert requests.post(url, data="{oops", timeout=5).status_code == 400
    tb.set_rate_limit("1:10")
    assert requests.post(url, json={"power": 5}, timeout=5).ok
    assert requests.post(url, json={"power": 6}, timeout=5).status_code == 429


@pytest.mark.timeout(30)
@pytest.mark.parametrize("version", [MQTTProtocolVersion.MQTTv311, MQTTProtocolVersion.MQTTv5])
def test_mqtt_telemetry_bad_token_and_one_session_per_token(
    tb: Emulator, version: MQTTProtocolVersion
) -> None:
    headers = login(tb)
    create(tb, headers, "thermo")
    token = tb.device("thermo").token  # type: ignore[union-attr]
    first = Device(tb, token, version)
    assert not first.connack[0].is_failure
    first.client.publish(
        "v1/devices/me/telemetry", json.dumps({"ts": 1, "values": {"t": 20}}), qos=1
    ).wait_for_publish(5)
    assert tb.telemetry("thermo") == [(1, {"t": 20})]
    second = Device(tb, token, version)
    wait_for(lambda: first.disconnects)
    assert tb.sessions_taken_over == 1 and tb.connected("thermo")
    if version == MQTTProtocolVersion.MQTTv5:
        assert first.disconnects[0].value == 0x8E  # session taken over
    second.close()
    first.close()
    bad = Device(tb, "not-a-token", version)
    assert bad.connack[0].is_failure
    # MQTT 5: 0x86 bad user name or password; 3.1.1's return code 5, which paho reports as 0x87
    assert bad.connack[0].value == (0x86 if version == MQTTProtocolVersion.MQTTv5 else 0x87)
    bad.close()


@pytest.mark.timeout(30)
def test_rpc_direct_and_through_a_gateway(tb: Emulator) -> None:
    headers = login(tb)
    create(tb, headers, "valve")
    create(tb, headers, "gw", additionalInfo={"gateway": True})
    valve = Device(tb, tb.device("valve").token)  # type: ignore[union-attr]
    valve.client.subscribe("v1/devices/me/rpc/request/+")

    def answer_valve(_c: Any, _u: Any, message: Any) -> None:
        request_id = message.topic.rsplit("/", 1)[1]
        valve.client.publish(f"v1/devices/me/rpc/response/{request_id}", json.dumps({"open": True}))

    valve.client.on_message = answer_valve
    time.sleep(0.2)
    assert tb.rpc("valve", "setOpen", True, timeout_s=3) == {"open": True}

    gateway = Device(tb, tb.device("gw").token)  # type: ignore[union-attr]
    gateway.client.subscribe("v1/gateway/rpc")

    def answer_gateway(_c: Any, _u: Any, message: Any) -> None:
        request = json.loads(message.payload)
        reply = {
            "device": request["device"],
            "id": request["data"]["id"],
            "data": {"done": request["data"]["method"]},
        }
        gateway.client.publish("v1/gateway/rpc", json.dumps(reply))

    gateway.client.on_message = answer_gateway
    gateway.client.publish("v1/gateway/connect", json.dumps({"device": "Sensor A"})).wait_for_publish(5)
    gateway.client.publish(
        "v1/gateway/telemetry", json.dumps({"Sensor A": [{"ts": 5, "values": {"t": 1}}]}), qos=1
    ).wait_for_publish(5)
    wait_for(lambda: tb.telemetry("Sensor A"))
    assert tb.telemetry("Sensor A") == [(5, {"t": 1})] and tb.connected("Sensor A")
    assert tb.rpc("Sensor A", "reboot", {}, timeout_s=3) == {"done": "reboot"}
    assert tb.rpc("nobody", "reboot", {}, timeout_s=0.5) is None
    valve.close()
    gateway.close()


@pytest.mark.timeout(30)
def test_rate_limit_closes_a_device_connection(tb: Emulator) -> None:
    headers = login(tb)
    create(tb, headers, "chatty")
    chatty = Device(tb, tb.device("chatty").token, MQTTProtocolVersion.MQTTv5)  # type: ignore[union-attr]
    tb.set_rate_limit("2:10")
    for value in range(3):
        chatty.client.publish("v1/devices/me/telemetry", json.dumps({"n": value}), qos=1)
    wait_for(lambda: chatty.disconnects)
    assert chatty.disconnects[0].value == 0x83
    assert len(tb.telemetry("chatty")) == 2 and tb.stats["rate_limited"] == 1
    chatty.close()


def test_injected_failures_come_first(tb: Emulator) -> None:
    tb.fail_next(2, 503, "<html>busy</html>", path="/api/auth")
    for _ in range(2):
        answer = requests.post(
            f"{tb.url}/api/auth/login", json={"username": USER, "password": PASSWORD}, timeout=5
        )
        assert answer.status_code == 503 and answer.text == "<html>busy</html>"
    assert login(tb)
    assert tb.requests[:3] == [("POST", "/api/auth/login")] * 3
