"""Live subscriptions against a running portal: scopes, snapshots, coalescing, bad input."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import pytest
import socketio

from tests.conftest import RunningLab
from tests.e2e.conftest import LiveClient
from tests.mqtt_helpers import connect as mqtt_connect
from tests.mqtt_helpers import publish
from tests.web.portal_testing import signed_in_session

pytestmark = pytest.mark.integration

Connect = Callable[..., LiveClient]


def publish_as_device(lab: RunningLab, room: str, attr: str, payload: str) -> None:
    device, password = lab.device
    topic = f"{lab.env['TOPIC_ROOT']}/{room}/{device}/{attr}"
    publish(lab.mqtt_client(device, password), lab.port("MQTT_PORT"), topic, payload)


def in_room(room: str) -> Callable[[dict[str, object]], bool]:
    return lambda value: value["room"] == room


def test_each_scope_receives_only_its_values(lab: RunningLab, live_client: Connect) -> None:
    room_a, room_b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    device, _ = lab.device
    site = live_client(auth={"scopes": [{"scope": "site"}]})
    room = live_client(auth={"scopes": [{"scope": "room", "room": room_a}]})
    only_device = live_client(auth={"scopes": [{"scope": "device", "room": room_b, "device": device}]})
    other_device = live_client(auth={"scopes": [{"scope": "device", "room": room_b, "device": "nobody"}]})
    publish_as_device(lab, room_a, "t", "1")
    publish_as_device(lab, room_b, "t", "2")

    site.wait_for(lambda _e: {v["room"] for v in site.values()} >= {room_a, room_b})
    room.wait_for(lambda _e: any(map(in_room(room_a), room.values())))
    only_device.wait_for(lambda _e: any(map(in_room(room_b), only_device.values())))
    time.sleep(0.5)  # anything misrouted would have arrived by now
    assert {v["room"] for v in room.values()} == {room_a}
    assert {(v["room"], v["device"]) for v in only_device.values()} == {(room_b, device)}
    assert other_device.values() == []


def test_subscribe_answers_with_a_snapshot_of_stored_values(
    lab: RunningLab, live_client: Connect, unique_room: str
) -> None:
    device, _ = lab.device
    watcher = live_client(auth={"scopes": [{"scope": "room", "room": unique_room}]})
    publish_as_device(lab, unique_room, "humidity", "40")
    watcher.wait_for(lambda _e: bool(watcher.values()))  # stored and pushed

    late = live_client(auth={"scopes": []})
    ack = late.client.call("subscribe", {"scope": "device", "room": unique_room, "device": device}, timeout=5)
    assert ack == {"scope": {"scope": "device", "room": unique_room, "device": device}}
    late.wait_for(lambda events: any(name == "snapshot" for name, _ in events))
    [(name, snapshot)] = late.events
    assert name == "snapshot"
    assert [(v["room"], v["device"], v["attr"], v["value"]) for v in snapshot] == [
        (unique_room, device, "humidity", 40.0)
    ]


def test_a_burst_is_coalesced_and_ends_on_the_last_value(
    lab: RunningLab, live_client: Connect, unique_room: str
) -> None:
    device, password = lab.device
    watcher = live_client(auth={"scopes": [{"scope": "room", "room": unique_room}]})
    client = lab.mqtt_client(device, password)
    assert not mqtt_connect(client, lab.port("MQTT_PORT")).is_failure
    try:
        topic = f"{lab.env['TOPIC_ROOT']}/{unique_room}/{device}/counter"
        infos = [client.publish(topic, json.dumps(step), qos=1) for step in range(200)]
        for info in infos:
            info.wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
    watcher.wait_for(lambda _e: any(v["value"] == 199 for v in watcher.values()))
    got = [v["value"] for v in watcher.values()]
    assert got[-1] == 199
    assert len(got) < 200, "updates are batched, not one event per message"
    assert got == sorted(got), "never an older value after a newer one"


@pytest.mark.parametrize(
    "data",
    [
        None,
        "site",
        ["site"],
        {"scope": "galaxy"},
        {"scope": "room", "room": "a/b"},
        {"scope": "device", "room": "r"},
    ],
)
def test_bad_subscribe_input_gets_an_error_event(live_client: Connect, data: object) -> None:
    watcher = live_client(auth={"scopes": []})
    ack = watcher.client.call("subscribe", data, timeout=5)
    assert set(ack) == {"error"}
    watcher.wait_for(lambda events: any(name == "error" for name, _ in events))
    assert watcher.events == [("error", {"event": "subscribe", "error": ack["error"]})]
    assert watcher.client.call("subscribe", {"scope": "site"}, timeout=5) == {"scope": {"scope": "site"}}


def test_clients_without_a_session_or_token_are_refused(lab: RunningLab, live_client: Connect) -> None:
    with pytest.raises(socketio.exceptions.ConnectionError):
        live_client(headers={}, auth={"token": "not-a-token"})


def test_connected_clients_and_pushed_updates_are_in_the_metrics(
    lab: RunningLab, live_client: Connect, unique_room: str
) -> None:
    watcher = live_client(auth={"scopes": [{"scope": "room", "room": unique_room}]})
    publish_as_device(lab, unique_room, "t", "5")
    watcher.wait_for(lambda _e: bool(watcher.values()))
    session = signed_in_session(
        lab.portal_url, lab.env["PORTAL_ADMIN_USER"], lab.env["PORTAL_ADMIN_PASSWORD"]
    )
    text = session.get(f"{lab.portal_url}/metrics", timeout=5).text
    samples = dict(
        line.rsplit(" ", 1)
        for line in text.splitlines()
        if line.startswith(("portal_live_clients ", "portal_live_updates_total "))
    )
    assert float(samples["portal_live_clients"]) >= 1
    assert float(samples["portal_live_updates_total"]) >= 1
