"""Nothing lost between broker and database: QoS 1 through portal kills and service restarts.

Each test runs its own lab instance (database, broker, portal; Node-RED is not needed) and a
publisher that numbers its QoS 1 messages. Whatever happens to the services, every number the
broker acknowledged to the publisher must end up in the database (duplicates are allowed: delivery
is at least once).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest
import requests

from labctl.config import LabConfig
from tests.conftest import RunningLab, own_lab
from tests.mqtt_helpers import connect

pytestmark = pytest.mark.integration

#: The services these tests need, in start order.
SERVICES = ("db", "mosquitto", "web")
#: How long stored rows may take to catch up with what the broker accepted.
CATCH_UP_S = 90.0


class SequencePublisher:
    """Publishes numbered QoS 1 messages from a thread; knows which ones the broker acknowledged."""

    def __init__(self, running: RunningLab, topic: str, per_second: int = 1000) -> None:
        self.topic = topic
        self.per_second = per_second
        self.client = running.mqtt_client(running.env["MQTT_ADMIN_USER"], running.env["MQTT_ADMIN_PASSWORD"])
        self.client.max_inflight_messages_set(100)
        reason = connect(self.client, running.port("MQTT_PORT"))
        assert not reason.is_failure, f"publisher refused: {reason}"
        self.sent: list[tuple[int, mqtt.MQTTMessageInfo]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            for _ in range(10):
                self.sent.append((number, self.client.publish(self.topic, str(number), qos=1)))
                number += 1
            self._stop.wait(10 / self.per_second)

    def __enter__(self) -> SequencePublisher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop publishing, give what is in flight a moment to be acknowledged, disconnect."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(info.is_published() for _, info in self.sent):
            time.sleep(0.05)
        self.client.disconnect()
        self.client.loop_stop()

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        """Wait until at least `count` messages were acknowledged by the broker."""
        deadline = time.monotonic() + timeout
        while len(self.acknowledged()) < count:
            assert time.monotonic() < deadline, f"the broker acknowledged only {len(self.acknowledged())}"
            time.sleep(0.05)

    def acknowledged(self) -> set[int]:
        """Numbers the broker acknowledged (PUBACK received)."""
        return {number for number, info in list(self.sent) if info.is_published()}


def stored(running: RunningLab, room: str) -> list[int]:
    """Every number stored for `room`, duplicates included."""
    with running.db() as db:
        rows = db.execute("SELECT value_num FROM readings WHERE room = %s", (room,)).fetchall()
    return [int(value) for (value,) in rows]  # type: ignore[call-overload]


def wait_until_stored(running: RunningLab, room: str, wanted: set[int]) -> list[int]:
    """Wait until every wanted number is stored; fails naming how many are missing."""
    deadline = time.monotonic() + CATCH_UP_S
    while True:
        rows = stored(running, room)
        missing = wanted - set(rows)
        if not missing:
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(missing)} of {len(wanted)} acknowledged messages not stored: {sorted(missing)[:20]}"
            )
        time.sleep(0.25)


def portal_get(running: RunningLab, path: str) -> int:
    try:
        return requests.get(running.portal_url + path, timeout=5).status_code
    except requests.ConnectionError:
        return 0


def wait_ready(running: RunningLab, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while portal_get(running, "/readyz") != 200:
        assert time.monotonic() < deadline, "portal not ready again"
        time.sleep(0.2)


def settled(
    probe: Callable[[], str | None], done: Callable[[str | None], bool], timeout: float = 30.0
) -> str | None:
    """The probe's answer once ``done`` accepts it (or the last one when time runs out)."""
    deadline = time.monotonic() + timeout
    answer = probe()
    while not done(answer) and time.monotonic() < deadline:
        time.sleep(0.2)
        answer = probe()
    return answer


def test_qos1_messages_are_all_stored(new_lab_config: Callable[..., LabConfig], unique_room: str) -> None:
    with own_lab(new_lab_config, "reliability-qos1", SERVICES) as running:
        with SequencePublisher(running, f"office/{unique_room}/meter/count", per_second=3000) as publisher:
            publisher.wait_for(3000)
        acknowledged = publisher.acknowledged()
        rows = wait_until_stored(running, unique_room, acknowledged)
        assert set(rows) == acknowledged
        assert len(rows) == len(acknowledged)  # no restart, so no redelivery: exactly once here


def test_a_killed_portal_loses_nothing(new_lab_config: Callable[..., LabConfig], unique_room: str) -> None:
    # A long linger keeps up to a second of messages received but not committed: the kill loses
    # them from the portal's memory, and only the broker's redelivery can bring them back.
    with own_lab(new_lab_config, "reliability-kill", SERVICES, INGEST_LINGER_MS="1000") as running:
        lab = running.lab
        with SequencePublisher(running, f"office/{unique_room}/meter/count") as publisher:
            publisher.wait_for(1000)
            pid = lab.pid(lab.service("web"))
            assert pid is not None
            os.killpg(pid, signal.SIGKILL)  # no chance to flush or acknowledge anything
            while lab.pid(lab.service("web")) is not None:
                time.sleep(0.05)
            publisher.wait_for(len(publisher.acknowledged()) + 1000)  # the broker queues meanwhile
            lab.start("web")
            publisher.wait_for(len(publisher.acknowledged()) + 1000)
        acknowledged = publisher.acknowledged()
        rows = wait_until_stored(running, unique_room, acknowledged)
        assert set(rows) >= acknowledged


def test_a_database_restart_under_load_loses_nothing(
    new_lab_config: Callable[..., LabConfig], unique_room: str
) -> None:
    # A small buffer, so the outage also exercises back-pressure: ingest blocks, the broker queues.
    with own_lab(
        new_lab_config, "reliability-db", SERVICES, INGEST_BUFFER_MAX="500", INGEST_BATCH_MAX="100"
    ) as running:
        lab = running.lab
        portal_pid = lab.pid(lab.service("web"))
        with SequencePublisher(running, f"office/{unique_room}/meter/count") as publisher:
            publisher.wait_for(1000)
            lab.stop("db")
            publisher.wait_for(len(publisher.acknowledged()) + 2000)  # more than the buffer holds
            assert portal_get(running, "/healthz") == 200
            assert portal_get(running, "/readyz") == 503
            lab.start("db")
            publisher.wait_for(len(publisher.acknowledged()) + 1000)
        acknowledged = publisher.acknowledged()
        rows = wait_until_stored(running, unique_room, acknowledged)
        assert set(rows) >= acknowledged
        assert lab.pid(lab.service("web")) == portal_pid, "the portal must stay up"
        wait_ready(running)
        log = (running.config.logs_dir / "web.log").read_text()
        assert "batch_max=100" in log
        assert "database writes recovered" in log


def alarm_raised(running: RunningLab, room: str) -> bytes | None:
    """Publish a temperature over the shipped threshold; the active alarm Node-RED publishes, if any."""
    received: list[bytes] = []
    client = running.mqtt_client(running.env["MQTT_ADMIN_USER"], running.env["MQTT_ADMIN_PASSWORD"])
    client.on_message = lambda _c, _u, message: received.append(bytes(message.payload))
    assert not connect(client, running.port("MQTT_PORT")).is_failure
    try:
        client.subscribe(f"alarms/{room}/#", qos=1)
        client.publish(f"office/{room}/thermo/temperature", "40", qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        client.disconnect()
        client.loop_stop()
    return received[0] if received else None


def test_the_portal_and_the_flows_reconnect_after_a_broker_restart(
    new_lab_config: Callable[..., LabConfig], unique_room: str
) -> None:
    with own_lab(new_lab_config, "reliability-broker", (*SERVICES, "nodered")) as running:
        lab = running.lab
        with SequencePublisher(running, f"office/{unique_room}/meter/count") as before:
            before.wait_for(200)
        wait_until_stored(running, unique_room, before.acknowledged())
        lab.stop("mosquitto")
        assert portal_get(running, "/readyz") == 503
        # ./lab status names the problem for the portal and for Node-RED's flows
        assert (lab.service("web").probe() or "").startswith("broker: "), lab.service("web").probe()
        nodered_down = settled(lambda: lab.service("nodered").probe(), lambda p: p is not None)
        assert (nodered_down or "").startswith("broker: "), nodered_down
        lab.start("mosquitto")
        wait_ready(running)  # reconnected and subscribed again
        assert settled(lambda: lab.service("nodered").probe(), lambda p: p is None) is None
        room_after = f"{unique_room}-after"
        with SequencePublisher(running, f"office/{room_after}/meter/count") as after:
            after.wait_for(200)
        wait_until_stored(running, room_after, after.acknowledged())
        # the flows subscribed again: a reading over the threshold raises an alarm
        alarm = alarm_raised(running, room_after)
        assert alarm is not None and b'"state":"active"' in alarm, alarm
