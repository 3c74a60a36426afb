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
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import pytest
import requests
import socketio

from labctl.config import LabConfig, free_ports
from labctl.process import ProcessSpec
from labctl.services import Portal
from tests.conftest import RunningLab, own_lab
from tests.web.portal_testing import publish_as, signed_in_session, wait_for

pytestmark = pytest.mark.integration

CLIENT_IDS = ("lab-portal-1", "lab-portal-2")
#: Values per burst, each of its own device: enough that both replicas take a share.
BURST = 200


@dataclass
class Replicas:
    """A lab of a test's own with two portal replicas sharing ingest and live values."""

    lab: RunningLab
    urls: list[str]
    redis_port: int
    redis_spec: ProcessSpec

    def session(self, replica: int) -> requests.Session:
        env = self.lab.env
        return signed_in_session(self.urls[replica], env["PORTAL_ADMIN_USER"], env["PORTAL_ADMIN_PASSWORD"])


def _redis_spec(lab: RunningLab, port: int, password: str) -> ProcessSpec:
    folder = lab.config.data_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "redis.conf"
    config.write_text(
        f'bind 127.0.0.1\nport {port}\nrequirepass "{password}"\nsave ""\nappendonly no\n'
        f'dir {folder}\nlogfile ""\n'
    )
    return ProcessSpec(name="redis", argv=["redis-server", str(config)], env={}, cwd=folder)


def _replica_spec(lab: RunningLab, number: int, port: int, redis_url: str) -> ProcessSpec:
    spec = Portal(lab.config).spec()
    argv = [f"127.0.0.1:{port}" if arg.startswith("127.0.0.1:") else arg for arg in spec.argv]
    env = {
        **spec.env,
        "MQTT_CLIENT_ID": CLIENT_IDS[number - 1],
        "MQTT_SHARE_GROUP": "lab-portal",
        "MQTT_SHARE_PEERS": ",".join(CLIENT_IDS),
        "REDIS_URL": redis_url,
        "PORTAL_REPLICA": f"web-{number}",
    }
    return replace(spec, name=f"web-{number}", argv=argv, env=env)


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def replicas(new_lab_config: Callable[..., LabConfig]) -> Iterator[Replicas]:
    with own_lab(new_lab_config, "replica-live", ("db", "mosquitto")) as lab:
        Portal(lab.config).migrate()
        redis_port, *ports = free_ports(3)
        password = "s3cret-" + lab.env["POSTGRES_PASSWORD"][:12]
        redis_spec = _redis_spec(lab, redis_port, password)
        redis_url = f"redis://:{password}@127.0.0.1:{redis_port}/0"
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        table = lab.lab.table
        try:
            table.start(redis_spec)
            for number, port in enumerate(ports, 1):
                table.start(_replica_spec(lab, number, port, redis_url))
            for url in urls:
                wait_for(f"{url} ready", partial(_ready, url), 30)
            yield Replicas(lab, urls, redis_port, redis_spec)
        finally:
            for name in ("web-1", "web-2", "redis"):
                table.stop(name, signal.SIGTERM)


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
    def connect(cls, replicas: Replicas, replica: int, room: str) -> Viewer:
        viewer = cls(socketio.Client(reconnection=False))
        cookie = "; ".join(f"{k}={v}" for k, v in replicas.session(replica).cookies.items())
        viewer.client.on("snapshot", viewer._on_snapshot)
        viewer.client.on("values", viewer._on_values)
        viewer.client.on("status", viewer.statuses.append)
        viewer.client.on("alarm", viewer.alarms.append)
        viewer.client.connect(
            replicas.urls[replica],
            headers={"Cookie": cookie},
            auth={"scopes": [{"scope": "room", "room": room}]},
            transports=["websocket"],
            wait_timeout=10,
        )
        return viewer

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
    table = replicas.lab.lab.table
    try:
        publish_burst(replicas, unique_room, first)
        for viewer in viewers:
            wait_for("the first burst live", partial(viewer.holds, first))

        table.stop("redis", signal.SIGTERM)
        for number, viewer in enumerate(viewers, 1):
            wait_for(
                f"web-{number} says live updates are paused",
                partial(viewer.live_is, "paused"),
            )
            assert "Redis" in viewer.statuses[-1]["problem"]
        publish_burst(replicas, unique_room, outage)
        # Ingest goes on: every value of the outage is stored.
        wait_for("the outage's values stored", lambda: stored_count(replicas, unique_room) == 2 * BURST)

        table.start(replicas.redis_spec)
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
