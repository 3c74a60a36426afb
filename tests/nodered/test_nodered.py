"""Node-RED as the lab runs it: editor behind adminAuth, shipped flows connected to the broker."""

from __future__ import annotations

import json
import time

import pytest
import requests

from labctl.config import ROOT
from tests.conftest import RunningLab

pytestmark = pytest.mark.integration


def request(url: str, data: dict[str, str] | None = None, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if data is None:
        response = requests.get(url, headers=headers, timeout=5)
    else:
        response = requests.post(url, data=data, headers=headers, timeout=5)
    return response.status_code, response.content


def login(lab: RunningLab, password: str) -> tuple[int, bytes]:
    return request(
        f"http://127.0.0.1:{lab.port('NODERED_PORT')}/auth/token",
        {
            "client_id": "node-red-admin",
            "grant_type": "password",
            "scope": "*",
            "username": "admin",
            "password": password,
        },
    )


def test_editor_api_needs_a_login(lab: RunningLab) -> None:
    status, _ = request(f"http://127.0.0.1:{lab.port('NODERED_PORT')}/flows")
    assert status == 401


def test_wrong_password_is_refused(lab: RunningLab) -> None:
    status, _ = login(lab, "not-it")
    assert status in (401, 403)


def test_admin_password_from_env_opens_the_editor_api(lab: RunningLab) -> None:
    status, body = login(lab, lab.env["NODERED_ADMIN_PASSWORD"])
    assert status == 200
    token = json.loads(body)["access_token"]
    status, body = request(f"http://127.0.0.1:{lab.port('NODERED_PORT')}/flows", token=token)
    assert status == 200
    deployed = {node["id"] for node in json.loads(body)}
    shipped = {node["id"] for node in json.loads((ROOT / "nodered" / "flows.json").read_text())}
    assert deployed == shipped, "the running flows are the shipped nodered/flows.json"


def test_flows_log_in_to_the_broker_with_the_nodered_account(lab: RunningLab) -> None:
    nodered_log = lab.config.logs_dir / "nodered.log"
    broker_log = lab.config.logs_dir / "mosquitto.log"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if "Connected to broker" in nodered_log.read_text() and "u'nodered'" in broker_log.read_text():
            break
        time.sleep(0.2)
    text = nodered_log.read_text()
    assert "Started flows" in text
    assert "Connected to broker" in text
    assert "u'nodered'" in broker_log.read_text()
    assert "[error]" not in text
