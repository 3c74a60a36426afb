"""The REST API against a running lab: devices, latest values, history buckets, alarms."""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import requests
import socketio

from tests.conftest import RunningLab
from tests.mqtt_helpers import connect
from tests.web.portal_testing import api_token, signed_in_session

pytestmark = pytest.mark.integration

WAIT_S = 10.0


@pytest.fixture(scope="module")
def api(lab: RunningLab) -> requests.Session:
    """A requests session that authenticates with a bearer token."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {api_token(lab, label='test_api')}"
    return session


def get(api: requests.Session, lab: RunningLab, path: str, **params: Any) -> Any:
    response = api.get(f"{lab.portal_url}{path}", params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    pytest.fail(f"{what}: not within {WAIT_S}s")


def publish_all(client: mqtt.Client, port: int, messages: list[tuple[str, str]]) -> None:
    """Publish every (topic, payload) at QoS 1 over one connection; wait for every PUBACK."""
    assert not connect(client, port).is_failure
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def stored_rows(lab: RunningLab, room: str) -> int:
    with lab.db() as conn:
        row = conn.execute("SELECT count(*) FROM readings WHERE room = %s", (room,)).fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


# -- devices, latest -----------------------------------------------------------------------------


def test_devices_and_latest_values(api: requests.Session, lab: RunningLab, unique_room: str) -> None:
    device, password = lab.device
    root = lab.env["TOPIC_ROOT"]
    base = int(time.time() * 1000) - 60_000
    publish_all(
        lab.mqtt_client(device, password),
        lab.port("MQTT_PORT"),
        [
            (f"{root}/{unique_room}/{device}/temperature", json.dumps({"value": 20.5, "ts": base})),
            (f"{root}/{unique_room}/{device}/temperature", json.dumps({"value": 21.5, "ts": base + 1000})),
            (f"{root}/{unique_room}/{device}/door", json.dumps({"value": "open", "ts": base + 500})),
            (f"{root}/{unique_room}/{device}/light", "true"),
        ],
    )
    wait_for("4 readings stored", lambda: stored_rows(lab, unique_room) == 4)

    devices = get(api, lab, "/api/devices", room=unique_room)["devices"]
    assert len(devices) == 1
    entry = devices[0]
    assert (entry["room"], entry["device"]) == (unique_room, device)
    assert isinstance(entry["first_seen"], int)
    assert entry["last_seen"] >= entry["first_seen"]
    by_attr = {a["attr"]: a for a in entry["attributes"]}
    assert list(by_attr) == ["door", "light", "temperature"]
    assert by_attr["temperature"] == {"attr": "temperature", "value": 21.5, "ts": base + 1000, "unit": "°C"}
    assert by_attr["door"]["value"] == "open"
    assert by_attr["door"]["unit"] is None, "no unit sent, none in web/units.json"
    assert entry["presence"] is None, "it never said"
    assert by_attr["light"]["value"] == 1

    values = get(api, lab, "/api/latest", room=unique_room, device=device)["values"]
    assert [(v["attr"], v["value"]) for v in values] == [
        ("door", "open"),
        ("light", 1),
        ("temperature", 21.5),
    ]
    assert all(v["room"] == unique_room and v["device"] == device for v in values)
    assert get(api, lab, "/api/latest", room=unique_room, device="nobody") == {"values": [], "next": None}
    assert get(api, lab, "/api/devices", room="no-such-room") == {"devices": [], "next": None, "total": 0}


def test_devices_and_latest_come_in_pages_that_cover_everything_once(
    api: requests.Session, lab: RunningLab, unique_room: str
) -> None:
    root = lab.env["TOPIC_ROOT"]
    names = [f"pg{index:02d}" for index in range(25)] + ["other-1", "Other-2"]
    client = lab.mqtt_client(lab.env["LAB_FLEET_USER"], lab.env["LAB_FLEET_PASSWORD"])
    publish_all(
        client,
        lab.port("MQTT_PORT"),
        [(f"{root}/{unique_room}/{name}/{attr}", "1") for name in names for attr in ("a", "b")],
    )
    wait_for("every reading stored", lambda: stored_rows(lab, unique_room) == 2 * len(names))

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"room": unique_room, "limit": 10}
        if cursor:
            params["cursor"] = cursor
        page = get(api, lab, "/api/devices", **params)
        assert page["total"] == len(names)
        assert len(page["devices"]) <= 10
        seen += [device["device"] for device in page["devices"]]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == sorted(seen) and sorted(seen) == sorted(names), "every device once, in order"

    prefixed = get(api, lab, "/api/devices", room=unique_room, prefix="pg1")
    assert [d["device"] for d in prefixed["devices"]] == [f"pg1{n}" for n in range(10)]
    assert prefixed["total"] == 10
    searched = get(api, lab, "/api/devices", room=unique_room, q="OTHER")
    assert sorted(d["device"] for d in searched["devices"]) == ["Other-2", "other-1"]
    assert get(api, lab, "/api/devices", room=unique_room, prefix="pg_")["total"] == 0, "_ is no wildcard"

    values: list[tuple[str, str]] = []
    cursor = None
    while True:
        params = {"room": unique_room, "limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = get(api, lab, "/api/latest", **params)
        assert len(page["values"]) <= 7
        values += [(v["device"], v["attr"]) for v in page["values"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert values == sorted(values) and len(values) == len(set(values)) == 2 * len(names)


@pytest.mark.parametrize(
    ("path", "params", "named"),
    [
        ("/api/devices", {"cursor": "not a cursor"}, "cursor"),
        ("/api/devices", {"cursor": "WyJhIl0"}, "cursor"),  # a list of one name: not a devices cursor
        ("/api/devices", {"cursor": "W251bGwsIG51bGxd"}, "cursor"),  # [null, null]
        ("/api/devices", {"cursor": "A" * 5000}, "cursor"),
        ("/api/latest", {"cursor": "WyJhIiwgImIiXQ"}, "cursor"),  # two names: not a latest cursor
        ("/api/devices", {"limit": "0"}, "limit"),
        ("/api/devices", {"limit": "1001"}, "limit"),
        ("/api/latest", {"limit": "10001"}, "limit"),
        ("/api/devices", {"prefix": "a/b"}, "prefix"),
        ("/api/devices", {"prefix": "\u200b"}, "prefix"),
        ("/api/devices", {"q": "x" * 201}, "q"),
        ("/api/devices", {"q": "\x00"}, "q"),
    ],
)
def test_hostile_paging_parameters_are_refused_by_name(
    api: requests.Session, lab: RunningLab, path: str, params: dict[str, str], named: str
) -> None:
    response = api.get(f"{lab.portal_url}{path}", params=params, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"].startswith(named)


# -- history --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def series(lab: RunningLab) -> Iterator[dict[str, Any]]:
    """Irregular numeric and text values at known past times in a room of their own, stored."""
    room = f"hist-{random.randrange(16**8):08x}"
    device, password = lab.device
    root = lab.env["TOPIC_ROOT"]
    rng = random.Random(7)
    start = (int(time.time() * 1000) // 3_600_000 - 3) * 3_600_000 + 123  # 3 h ago, not aligned
    times = sorted(rng.sample(range(start, start + 900_000), 120))  # distinct ms in 15 min
    numbers = [round(rng.uniform(-10, 40), 3) for _ in times]
    words = [rng.choice(["open", "closed", "ajar"]) for _ in times[:40]]
    messages = [
        (f"{root}/{room}/{device}/temp", json.dumps({"value": v, "ts": ts}))
        for ts, v in zip(times, numbers, strict=True)
    ] + [
        (f"{root}/{room}/{device}/door", json.dumps({"value": w, "ts": ts}))
        for ts, w in zip(times[:40], words, strict=True)
    ]
    rng.shuffle(messages)  # arrival order must not matter
    publish_all(lab.mqtt_client(device, password), lab.port("MQTT_PORT"), messages)
    wait_for("history stored", lambda: stored_rows(lab, room) == len(messages))
    yield {"room": room, "device": device, "start": start, "end": start + 900_000}


def raw_rows(lab: RunningLab, room: str, attr: str) -> list[tuple[int, float | str]]:
    with lab.db() as conn:
        rows = conn.execute(
            "SELECT (extract(epoch FROM ts) * 1000)::bigint, value_num, value_text FROM readings "
            "WHERE room = %s AND attr = %s ORDER BY ts",
            (room, attr),
        ).fetchall()
    result: list[tuple[int, float | str]] = []
    for ts, num, text in rows:
        value = num if num is not None else text
        assert isinstance(value, float | str)
        result.append((int(str(ts)), value))
    return result


def expected_buckets(rows: list[tuple[int, Any]], bucket_s: int, agg: str) -> list[tuple[int, Any]]:
    groups: dict[int, list[tuple[int, Any]]] = defaultdict(list)
    for ts, value in rows:
        groups[ts // (bucket_s * 1000) * bucket_s * 1000].append((ts, value))
    result: list[tuple[int, Any]] = []
    for start in sorted(groups):
        group = groups[start]
        values = [value for _, value in group]
        if agg == "avg":
            result.append((start, math.fsum(values) / len(values)))
        elif agg == "min":
            result.append((start, min(values)))
        elif agg == "max":
            result.append((start, max(values)))
        elif agg == "count":
            result.append((start, len(values)))
        else:  # last: the value with the greatest timestamp
            result.append((start, max(group)[1]))
    return result


def history(api: requests.Session, lab: RunningLab, series: dict[str, Any], attr: str, **params: Any) -> Any:
    return get(
        api,
        lab,
        "/api/history",
        room=series["room"],
        device=series["device"],
        attr=attr,
        **{"from": series["start"], "to": series["end"]},
        **params,
    )


@pytest.mark.parametrize("bucket", [1, 7, 60, 300, 3600])
@pytest.mark.parametrize("agg", ["avg", "min", "max", "last", "count"])
def test_history_buckets_equal_aggregates_of_the_raw_rows(
    api: requests.Session, lab: RunningLab, series: dict[str, Any], bucket: int, agg: str
) -> None:
    body = history(api, lab, series, "temp", bucket=bucket, agg=agg)
    assert (body["bucket"], body["agg"], body["truncated"]) == (bucket, agg, False)
    got = [(point["ts"], point["value"]) for point in body["points"]]
    expected = expected_buckets(raw_rows(lab, series["room"], "temp"), bucket, agg)
    assert [ts for ts, _ in got] == [ts for ts, _ in expected]
    for (_, value), (_, wanted) in zip(got, expected, strict=True):
        assert value == pytest.approx(wanted, rel=1e-9)


@pytest.mark.parametrize("agg", ["last", "count"])
def test_history_of_text_values(
    api: requests.Session, lab: RunningLab, series: dict[str, Any], agg: str
) -> None:
    body = history(api, lab, series, "door", bucket=60, agg=agg)
    expected = expected_buckets(raw_rows(lab, series["room"], "door"), 60, agg)
    assert [(p["ts"], p["value"]) for p in body["points"]] == expected


@pytest.mark.parametrize("agg", ["avg", "min", "max"])
def test_numeric_aggregates_of_text_are_refused(
    api: requests.Session, lab: RunningLab, series: dict[str, Any], agg: str
) -> None:
    response = api.get(
        f"{lab.portal_url}/api/history",
        params={
            "room": series["room"],
            "device": series["device"],
            "attr": "door",
            "bucket": 60,
            "agg": agg,
            "from": series["start"],
            "to": series["end"],
        },
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"agg={agg}")


def test_raw_history_is_every_row_in_order_and_says_when_cut(
    api: requests.Session, lab: RunningLab, series: dict[str, Any]
) -> None:
    rows = raw_rows(lab, series["room"], "temp")
    body = history(api, lab, series, "temp")
    assert (body["bucket"], body["agg"], body["truncated"]) == (None, None, False)
    assert [(p["ts"], p["value"]) for p in body["points"]] == rows
    cut = history(api, lab, series, "temp", limit=10)
    assert cut["truncated"] is True
    assert [(p["ts"], p["value"]) for p in cut["points"]] == rows[:10]
    # Both ends are inclusive.
    one = get(
        api,
        lab,
        "/api/history",
        room=series["room"],
        device=series["device"],
        attr="temp",
        **{"from": rows[5][0], "to": rows[5][0]},
    )
    assert [(p["ts"], p["value"]) for p in one["points"]] == [rows[5]]


def test_unknown_names_give_empty_history(api: requests.Session, lab: RunningLab) -> None:
    body = get(api, lab, "/api/history", room="nowhere", device="nothing", attr="none", bucket=60)
    assert body["points"] == []
    assert body["truncated"] is False


# -- alarms ---------------------------------------------------------------------------------------


def publish_alarm(lab: RunningLab, topic: str, payload: bytes | str, retain: bool = False) -> None:
    client = lab.mqtt_client(lab.env["MQTT_ADMIN_USER"], lab.env["MQTT_ADMIN_PASSWORD"])
    assert not connect(client, lab.port("MQTT_PORT")).is_failure
    try:
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def alarms_of(api: requests.Session, lab: RunningLab, room: str, **params: Any) -> list[dict[str, Any]]:
    return list(get(api, lab, "/api/alarms", room=room, **params)["alarms"])


class AlarmListener:
    """A Socket.IO client authenticated with a bearer token, collecting ``alarm`` events."""

    def __init__(self, lab: RunningLab, token: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        self.client = socketio.Client(reconnection=False)
        self.client.on("alarm", self._on_alarm)
        self.client.connect(lab.portal_url, auth={"token": token}, transports=["websocket"], wait_timeout=10)

    def _on_alarm(self, alarm: dict[str, Any]) -> None:
        with self.arrived:
            self.events.append(alarm)
            self.arrived.notify_all()

    def wait(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_S
        with self.arrived:
            while True:
                for event in self.events:
                    if match(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"no matching alarm event; got {self.events}")
                self.arrived.wait(remaining)


def test_alarm_from_the_broker_is_listed_pushed_acknowledged_and_cleared(
    api: requests.Session, lab: RunningLab, unique_room: str
) -> None:
    listener = AlarmListener(lab, str(api.headers["Authorization"]).split()[1])
    try:
        ts = int(time.time() * 1000)
        topic = f"alarms/{unique_room}/dev/high_temp"
        payload = {"type": "high_temp", "severity": "critical", "state": "active", "value": 41.5, "ts": ts}
        publish_alarm(lab, topic, json.dumps(payload), retain=True)
        alarms = wait_for("alarm listed", lambda: alarms_of(api, lab, unique_room))
        assert len(alarms) == 1
        alarm = alarms[0]
        assert {k: alarm[k] for k in ("room", "device", "type", "severity", "state", "value", "ts")} == {
            "room": unique_room,
            "device": "dev",
            "type": "high_temp",
            "severity": "critical",
            "state": "active",
            "value": 41.5,
            "ts": ts,
        }
        assert (alarm["acked_at"], alarm["acked_by"], alarm["cleared_at"]) == (None, None, None)
        pushed = listener.wait(lambda e: e["id"] == alarm["id"])
        assert pushed == alarm
        assert alarms_of(api, lab, unique_room, state="cleared") == []

        # The same retained message again (as after a portal restart) changes nothing.
        publish_alarm(lab, topic, json.dumps(payload), retain=True)
        # Acknowledge with the bearer token (no CSRF header needed).
        acked = api.post(f"{lab.portal_url}/api/alarms/{alarm['id']}/ack", timeout=10)
        assert acked.status_code == 200, acked.text
        assert acked.json()["acked_by"] == lab.env["PORTAL_ADMIN_USER"]
        assert isinstance(acked.json()["acked_at"], int)
        listener.wait(lambda e: e["id"] == alarm["id"] and e["acked_by"] is not None)

        # Clear from a browser session: the CSRF header is required.
        browser = signed_in_session(
            lab.portal_url, lab.env["PORTAL_ADMIN_USER"], lab.env["PORTAL_ADMIN_PASSWORD"]
        )
        url = f"{lab.portal_url}/api/alarms/{alarm['id']}/clear"
        assert browser.post(url, timeout=10).status_code == 403
        page = browser.get(f"{lab.portal_url}/", timeout=10).text
        csrf = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        cleared = browser.post(url, headers={"X-CSRF-Token": csrf}, timeout=10)
        assert cleared.status_code == 200, cleared.text
        body = cleared.json()
        assert (body["state"], body["cleared_by"]) == ("cleared", lab.env["PORTAL_ADMIN_USER"])
        assert body["acked_at"] == acked.json()["acked_at"]  # the first acknowledgement stays
        listener.wait(lambda e: e["id"] == alarm["id"] and e["state"] == "cleared")

        # The rule clears it later: recorded in the history, still one alarm.
        later = {**payload, "state": "cleared", "value": 30.0, "ts": ts + 5000}
        publish_alarm(lab, topic, json.dumps(later), retain=True)
        wait_for("rule's clear recorded", lambda: len(events_of(lab, alarm["id"])) == 4)
        assert [kind for kind, _ in events_of(lab, alarm["id"])] == ["raised", "acked", "cleared", "cleared"]
        assert [actor for _, actor in events_of(lab, alarm["id"])][1:] == [
            lab.env["PORTAL_ADMIN_USER"]
        ] * 2 + [None]
        assert len(alarms_of(api, lab, unique_room)) == 1
        assert alarms_of(api, lab, unique_room, state="active") == []
        # ... and the API gives the same history, with the severity and value at each step
        history = get(api, lab, f"/api/alarms/{alarm['id']}")
        assert {k: v for k, v in history.items() if k != "events"} == alarms_of(api, lab, unique_room)[0]
        assert [(e["kind"], e["actor"]) for e in history["events"]] == events_of(lab, alarm["id"])
        assert [(e["severity"], e["value"], e["ts"]) for e in history["events"]] == [
            ("critical", 41.5, ts),
            ("critical", 41.5, ts),
            ("critical", 41.5, ts),
            ("critical", 30.0, ts + 5000),
        ]
        assert all(isinstance(e["at"], int) for e in history["events"])
        assert [e["at"] for e in history["events"]] == sorted(e["at"] for e in history["events"])

        # It fires again: a new occurrence, listed first.
        publish_alarm(lab, topic, json.dumps({**payload, "ts": ts + 10_000}), retain=True)
        newest = wait_for("second occurrence", lambda: alarms_of(api, lab, unique_room, state="active"))
        assert newest[0]["id"] != alarm["id"]
        assert [a["id"] for a in alarms_of(api, lab, unique_room)] == [newest[0]["id"], alarm["id"]]
    finally:
        listener.client.disconnect()
        publish_alarm(lab, f"alarms/{unique_room}/dev/high_temp", b"", retain=True)  # drop the retained one


def events_of(lab: RunningLab, alarm_id: int) -> list[tuple[str, str | None]]:
    with lab.db() as conn:
        rows = conn.execute(
            "SELECT kind, actor FROM alarm_events WHERE alarm_id = %s ORDER BY id", (alarm_id,)
        )
        return [(str(kind), actor) for kind, actor in rows.fetchall()]  # type: ignore[misc]


def test_unknown_alarms_are_404(api: requests.Session, lab: RunningLab) -> None:
    for alarm_id in ("9223372036854775807", "99999999999999999999999"):
        response = api.get(f"{lab.portal_url}/api/alarms/{alarm_id}", timeout=10)
        assert (response.status_code, response.json()) == (404, {"error": "no such alarm"})
    for hostile in ("-1", "1.5", "abc", "1%00"):
        assert api.get(f"{lab.portal_url}/api/alarms/{hostile}", timeout=10).status_code == 404
    for action in ("ack", "clear"):
        response = api.post(f"{lab.portal_url}/api/alarms/9223372036854775807/{action}", timeout=10)
        assert (response.status_code, response.json()) == (404, {"error": "no such alarm"})
        huge = api.post(f"{lab.portal_url}/api/alarms/99999999999999999999999/{action}", timeout=10)
        assert huge.status_code == 404


HOSTILE = [
    b"\xff\xfe\x00",
    b"not json",
    b"[1, 2, 3]",
    b'{"state": "exploded"}',
    b'{"value": {"a": [1]}}',
    b'{"value": NaN}',
    b'{"ts": "soon"}',
    b'{"type": "other_type"}',
    b"{" * 5000,
    json.dumps({"severity": "x" * 1000}).encode(),
]


def rejected_total(api: requests.Session, lab: RunningLab) -> float:
    text = api.get(f"{lab.portal_url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("portal_alarms_rejected_total{")
    )


def test_hostile_alarm_messages_are_rejected_without_harm(
    api: requests.Session, lab: RunningLab, unique_room: str
) -> None:
    before = rejected_total(api, lab)
    for i, payload in enumerate(HOSTILE):
        publish_alarm(lab, f"alarms/{unique_room}/dev/type{i}", payload)
    publish_alarm(lab, f"alarms/{unique_room}/dev/too/deep", b'{"state": "active"}')
    publish_alarm(lab, f"alarms/{unique_room}/dev/sentinel", b'{"severity": "info", "value": true}')
    alarms = wait_for("sentinel alarm", lambda: alarms_of(api, lab, unique_room))
    assert [(a["type"], a["severity"], a["value"]) for a in alarms] == [("sentinel", "info", 1)]
    assert rejected_total(api, lab) - before == len(HOSTILE) + 1
    assert requests.get(f"{lab.portal_url}/readyz", timeout=10).status_code == 200
