"""Portal replicas share live values through Redis: every viewer sees every value whichever replica
stored it, snapshots come from the ``latest`` table, alarms are stored once and pushed to everybody,
a login is valid on each replica, and Redis stopped and started pauses live updates without losing a
value (ingest goes on), then they resume by themselves with fresh snapshots."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import requests
import socketio

from labctl.config import LabConfig
from tests.conftest import RunningLab, own_lab
from tests.web.portal_testing import api_token, publish_as, signed_in_session, wait_for

pytestmark = pytest.mark.integration

#: Values per burst, each of its own device: enough that both replicas take a share.
BURST = 200


@dataclass
class Replicas:
    """A lab of a test's own as ``./lab`` runs it with ``PORTAL_REPLICAS=2``: Redis, two replicas
    sharing ingest and live values, and the front (HAProxy) on ``PORTAL_PORT``."""

    lab: RunningLab
    urls: list[str]  # each replica's own address

    @property
    def front(self) -> str:
        return self.lab.portal_url

    def session(self, replica: int) -> requests.Session:
        """Signed in on replica ``replica`` (0 or 1), or through the front with ``-1``."""
        env = self.lab.env
        url = self.front if replica < 0 else self.urls[replica]
        return signed_in_session(url, env["PORTAL_ADMIN_USER"], env["PORTAL_ADMIN_PASSWORD"])

    def cookie(self, replica: int) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.session(replica).cookies.items())


@pytest.fixture
def replicas(new_lab_config: Callable[..., LabConfig]) -> Iterator[Replicas]:
    services = ("db", "mosquitto", "redis", "web-1", "web-2", "front")
    with own_lab(new_lab_config, "replica-live", services, PORTAL_REPLICAS="2") as lab:
        yield Replicas(lab, [f"http://127.0.0.1:{replica.port}" for replica in lab.lab.replicas])


@dataclass
class Viewer:
    """A Socket.IO client of one replica, keeping the newest value of each (device, attr)."""

    client: socketio.Client
    values: dict[tuple[str, str], Any] = field(default_factory=dict)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    alarms: list[dict[str, Any]] = field(default_factory=list)
    snapshots: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def connect(cls, replicas: Replicas, replica: int, room: str, *, reconnect: bool = False) -> Viewer:
        """A viewer of ``room`` on replica ``replica`` (0 or 1), or through the front with ``-1``
        (then it reconnects by itself when ``reconnect``, as a browser does)."""
        viewer = cls(socketio.Client(reconnection=reconnect, reconnection_delay=0.5))
        viewer.client.on("snapshot", viewer._on_snapshot)
        viewer.client.on("values", viewer._on_values)
        viewer.client.on("status", viewer.statuses.append)
        viewer.client.on("alarm", viewer.alarms.append)
        viewer.client.connect(
            replicas.front if replica < 0 else replicas.urls[replica],
            headers={"Cookie": replicas.cookie(replica)},
            auth={"scopes": [{"scope": "room", "room": room}]},
            transports=["websocket"],
            wait_timeout=10,
        )
        return viewer

    @property
    def replica(self) -> str:
        """The replica serving this viewer now (its last status says)."""
        return str(self.statuses[-1]["replica"]) if self.statuses else ""

    def _on_snapshot(self, items: list[dict[str, Any]]) -> None:
        self.snapshots += 1
        self._on_values(items)

    def _on_values(self, items: list[dict[str, Any]]) -> None:
        with self.lock:
            for item in items:
                key = (item["device"], item["attr"])
                current = self.values.get(key)
                if current is None or item["ts"] >= current["ts"]:
                    self.values[key] = item

    def holds(self, value_of: Callable[[int], str], count: int = BURST) -> bool:
        """True once the viewer holds ``value_of(n)`` for each device ``d<n>``."""
        with self.lock:
            return all(
                str(self.values.get((f"d{n:04d}", "t"), {}).get("value")) == value_of(n) for n in range(count)
            )

    def live_is(self, state: str) -> bool:
        """True when the last status this viewer heard says live updates are ``state``."""
        return bool(self.statuses) and self.statuses[-1]["live"] == state

    def holds_on(self, final: dict[str, str], not_on: tuple[str, ...]) -> bool:
        """True once the viewer holds each device's ``final`` value, on a replica not in ``not_on``."""
        with self.lock:
            values = {device: self.values.get((device, "t"), {}).get("value") for device in final}
        return self.replica not in not_on and values == final

    def heard_alarms(self) -> bool:
        return bool(self.alarms)

    def close(self) -> None:
        self.client.disconnect()


def first(n: int) -> str:
    """The text value of device ``d<n>`` in a first burst (text, so it comes back as sent)."""
    return f"first-{n}"


def double(n: int) -> str:
    return f"double-{n * 2}"


def outage(n: int) -> str:
    return f"outage-{n}"


def after(n: int) -> str:
    return f"after-{n}"


def publish_burst(replicas: Replicas, room: str, value_of: Callable[[int], str], count: int = BURST) -> None:
    root = replicas.lab.env["TOPIC_ROOT"]
    messages = [(f"{root}/{room}/d{n:04d}/t", value_of(n)) for n in range(count)]
    publish_as(replicas.lab, "LAB_FLEET", messages)


def publish_alarm(replicas: Replicas, room: str) -> None:
    """An active alarm ``hot`` of the device ``boiler``, as a Node-RED rule raises one."""
    alarm = {
        "type": "hot",
        "severity": "major",
        "state": "active",
        "value": 41.5,
        "ts": int(time.time() * 1000),
    }
    publish_as(replicas.lab, "MQTT_ADMIN", [(f"alarms/{room}/boiler/hot", json.dumps(alarm))])


def metric(session: requests.Session, url: str, name: str) -> float:
    for line in session.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in {url}/metrics")


def stored_count(replicas: Replicas, room: str) -> int:
    with replicas.lab.db() as db:
        row = db.execute("SELECT count(*) FROM readings WHERE room = %s", (room,)).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_every_viewer_sees_every_value_whichever_replica_stored_it(
    replicas: Replicas, unique_room: str
) -> None:
    viewers = [Viewer.connect(replicas, replica, unique_room) for replica in (0, 1)]
    try:
        publish_burst(replicas, unique_room, first)
        for number, viewer in enumerate(viewers, 1):
            wait_for(
                f"viewer of web-{number} holds all {BURST} values",
                partial(viewer.holds, first),
            )
        shares = [
            metric(replicas.session(i), url, "portal_ingest_messages_total")
            for i, url in enumerate(replicas.urls)
        ]
        assert sum(shares) == BURST
        assert min(shares) > 0, f"one replica stored everything: {shares}"
        # Each replica's viewers heard its own status, with its name.
        assert [viewer.statuses[0]["replica"] for viewer in viewers] == ["web-1", "web-2"]
        assert all(viewer.statuses[-1]["live"] == "up" for viewer in viewers)
    finally:
        for viewer in viewers:
            viewer.close()


def test_a_snapshot_holds_the_values_of_both_replicas(replicas: Replicas, unique_room: str) -> None:
    publish_burst(replicas, unique_room, double)
    wait_for("every value stored", lambda: stored_count(replicas, unique_room) == BURST)
    for replica in (0, 1):
        viewer = Viewer.connect(replicas, replica, unique_room)
        try:
            wait_for(
                f"snapshot of web-{replica + 1} holds all {BURST} values",
                partial(viewer.holds, double),
            )
        finally:
            viewer.close()


def test_an_alarm_is_stored_once_and_pushed_to_the_viewers_of_every_replica(
    replicas: Replicas, unique_room: str
) -> None:
    viewers = [Viewer.connect(replicas, replica, unique_room) for replica in (0, 1)]
    try:
        publish_alarm(replicas, unique_room)
        for number, viewer in enumerate(viewers, 1):
            wait_for(f"viewer of web-{number} hears the alarm", viewer.heard_alarms)
            assert [(a["room"], a["device"], a["type"]) for a in viewer.alarms] == [
                (unique_room, "boiler", "hot")
            ]
        with replicas.lab.db() as db:
            rows = db.execute("SELECT count(*) FROM alarms WHERE room = %s", (unique_room,)).fetchone()
        assert rows is not None and int(str(rows[0])) == 1
    finally:
        for viewer in viewers:
            viewer.close()


def test_a_login_on_one_replica_is_valid_on_the_other(replicas: Replicas) -> None:
    session = replicas.session(0)
    answer = session.get(f"{replicas.urls[1]}/api/devices", timeout=5)
    assert answer.status_code == 200, answer.text[:200]
    assert requests.get(f"{replicas.urls[1]}/api/devices", timeout=5).status_code == 401


def test_redis_stopped_pauses_live_updates_without_losing_a_value_and_they_resume_by_themselves(
    replicas: Replicas, unique_room: str
) -> None:
    viewers = [Viewer.connect(replicas, replica, unique_room) for replica in (0, 1)]
    lab = replicas.lab.lab
    try:
        publish_burst(replicas, unique_room, first)
        for viewer in viewers:
            wait_for("the first burst live", partial(viewer.holds, first))

        lab.stop("redis")
        for number, viewer in enumerate(viewers, 1):
            wait_for(
                f"web-{number} says live updates are paused",
                partial(viewer.live_is, "paused"),
            )
            assert "Redis" in viewer.statuses[-1]["problem"]
        publish_burst(replicas, unique_room, outage)
        # Ingest goes on: every value of the outage is stored.
        wait_for("the outage's values stored", lambda: stored_count(replicas, unique_room) == 2 * BURST)

        lab.start("redis")
        for number, viewer in enumerate(viewers, 1):
            wait_for(
                f"web-{number} says live updates are back",
                partial(viewer.live_is, "up"),
                30,
            )
            # A fresh snapshot brings what the viewer missed, the other replica's share included.
            wait_for(
                f"viewer of web-{number} holds every value of the outage",
                partial(viewer.holds, outage),
            )
        publish_burst(replicas, unique_room, after)
        for number, viewer in enumerate(viewers, 1):
            wait_for(
                f"viewer of web-{number} live again",
                partial(viewer.holds, after),
            )
        # Events for everybody (Flask-SocketIO's message queue) are back too.
        publish_alarm(replicas, unique_room)
        for number, viewer in enumerate(viewers, 1):
            wait_for(f"viewer of web-{number} hears an alarm", viewer.heard_alarms, 30)
    finally:
        for viewer in viewers:
            viewer.close()


def viewers_on_both(replicas: Replicas, room: str) -> list[Viewer]:
    """Viewers through the front, until one is on each replica (round robin: two or three)."""
    viewers: list[Viewer] = []
    while {"web-1", "web-2"} - {viewer.replica for viewer in viewers}:
        assert len(viewers) < 6, "the front put every viewer on one replica"
        viewer = Viewer.connect(replicas, -1, room, reconnect=True)
        wait_for("its status", lambda viewer=viewer: viewer.statuses)  # type: ignore[misc]
        viewers.append(viewer)
    return viewers


def publish_steadily(
    replicas: Replicas, room: str, count: int, per_second: int, then: Callable[[], object]
) -> None:
    """``count`` QoS 1 values of 50 devices at about ``per_second``, calling ``then`` a third of the
    way in; every one acknowledged by the broker."""
    root = replicas.lab.env["TOPIC_ROOT"]
    env = replicas.lab.env
    client = replicas.lab.mqtt_client(env["LAB_FLEET_USER"], env["LAB_FLEET_PASSWORD"])
    client.connect("127.0.0.1", replicas.lab.port("MQTT_PORT"))
    client.loop_start()
    try:
        sent = []
        started = time.monotonic()
        for n in range(count):
            if n == count // 3:
                then()
            sent.append(client.publish(f"{root}/{room}/d{n % 50:04d}/t", f"v{n}", qos=1))
            time.sleep(max(0.0, started + n / per_second - time.monotonic()))
        for message in sent:
            message.wait_for_publish(timeout=30)
    finally:
        client.loop_stop()
        client.disconnect()


def test_a_replica_killed_under_load_loses_nothing_and_its_viewers_move_to_the_other(
    replicas: Replicas, unique_room: str
) -> None:
    viewers = viewers_on_both(replicas, unique_room)
    killed = viewers[0].replica
    lab = replicas.lab.lab
    try:
        publish_steadily(
            replicas, unique_room, 3000, 1000, lambda: lab.table.stop(killed, signal.SIGKILL, timeout=0)
        )
        # The survivor stores its share, then takes over what the broker kept for the dead one.
        wait_for("all 3,000 values stored", lambda: stored_count(replicas, unique_room) == 3000, 60)
        final = {f"d{d:04d}": f"v{max(n for n in range(3000) if n % 50 == d)}" for d in range(50)}
        for viewer in viewers:
            # Those of the dead replica reconnected through the front, to the survivor.
            wait_for(
                "every viewer on the survivor, holding every final value",
                partial(viewer.holds_on, final, ("", killed)),
                30,
            )
    finally:
        for viewer in viewers:
            viewer.close()


def test_the_front_restarted_its_viewers_come_back_by_themselves(
    replicas: Replicas, unique_room: str
) -> None:
    viewers = viewers_on_both(replicas, unique_room)
    lab = replicas.lab.lab
    try:
        lab.stop("front")
        wait_for("viewers cut off", lambda: not any(viewer.client.connected for viewer in viewers))
        publish_burst(replicas, unique_room, outage)  # meanwhile, stored as ever
        lab.start("front")
        for viewer in viewers:
            wait_for("the viewer back, with what it missed", partial(viewer.holds, outage), 30)
        publish_burst(replicas, unique_room, after)
        for viewer in viewers:
            wait_for("live again", partial(viewer.holds, after))
    finally:
        for viewer in viewers:
            viewer.close()


def test_a_device_removed_on_one_replica_is_gone_from_the_snapshots_of_the_other(
    replicas: Replicas, unique_room: str
) -> None:
    watcher = Viewer.connect(replicas, 1, unique_room)
    try:
        publish_burst(replicas, unique_room, first, 20)
        wait_for("web-2 holds every value", partial(watcher.holds, first, 20))  # in its cache too
    finally:
        watcher.close()
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {api_token(replicas.lab, label='replica removal')}"
    answer = api.delete(f"{replicas.urls[0]}/api/devices/{unique_room}/d0003", timeout=10)
    assert answer.status_code == 204, answer.text[:300]
    for replica in (0, 1):
        viewer = Viewer.connect(replicas, replica, unique_room)
        try:
            wait_for(f"a snapshot from web-{replica + 1}", lambda viewer=viewer: viewer.snapshots)  # type: ignore[misc]
            devices = {device for device, _attr in viewer.values}
            assert devices == {f"d{n:04d}" for n in range(20)} - {"d0003"}
        finally:
            viewer.close()
