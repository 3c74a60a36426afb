"""Portal replicas share ingest through an MQTT shared subscription (``MQTT_SHARE_GROUP``): every
message is stored once, each replica takes a share; a replica killed and started again gets what
the broker kept for it, and the share of one that never returns is taken over by the other
(``MQTT_SHARE_PEERS``): nothing is lost."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from paho.mqtt.enums import MQTTProtocolVersion

from labctl.config import LabConfig
from labctl.process import ProcessSpec
from tests.conftest import RunningLab, own_lab
from tests.web.portal_testing import signed_in_session

pytestmark = pytest.mark.integration

#: Messages per burst: enough that a share of none would not be by chance.
BURST = 300


def replica_spec(lab: RunningLab, number: int) -> ProcessSpec:
    """Replica ``number`` of the group as ``./lab`` runs it (PORTAL_REPLICAS=2)."""
    return lab.lab.service(f"web-{number}").spec()


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, f"{url} never became ready"
        time.sleep(0.2)


def ingested(url: str, lab: RunningLab) -> int:
    """How many telemetry messages this replica accepted (its own metrics)."""
    session = signed_in_session(url, lab.env["PORTAL_ADMIN_USER"], lab.env["PORTAL_ADMIN_PASSWORD"])
    text = session.get(f"{url}/metrics", timeout=5).text
    match = re.search(r"^portal_ingest_messages_total (\S+)$", text, re.MULTILINE)
    assert match is not None, text[:300]
    return int(float(match.group(1)))


@pytest.fixture
def replicas(new_lab_config: Callable[..., LabConfig]) -> Iterator[tuple[RunningLab, list[str]]]:
    """A lab of a test's own (database, broker, Redis) with two portal replicas in one group."""
    services = ("db", "mosquitto", "redis", "web-1", "web-2")
    with own_lab(new_lab_config, "shared-ingest", services, PORTAL_REPLICAS="2") as lab:
        yield lab, [f"http://127.0.0.1:{replica.port}" for replica in lab.lab.replicas]


def publish(lab: RunningLab, room: str, first: int, count: int) -> None:
    """``count`` QoS 1 values, each of its own device, every one acknowledged by the broker."""
    client = lab.mqtt_client(
        lab.env["MQTT_ADMIN_USER"], lab.env["MQTT_ADMIN_PASSWORD"], MQTTProtocolVersion.MQTTv311
    )
    client.connect("127.0.0.1", lab.port("MQTT_PORT"))
    client.loop_start()
    try:
        sent = [
            client.publish(f"{lab.env['TOPIC_ROOT']}/{room}/d{n:04d}/t", str(n), qos=1)
            for n in range(first, first + count)
        ]
        for message in sent:
            message.wait_for_publish(timeout=10)
    finally:
        client.loop_stop()
        client.disconnect()


def stored(lab: RunningLab, room: str) -> list[tuple[str, int]]:
    """Each device of ``room`` and how many values it has stored."""
    with lab.db() as db:
        rows = db.execute(
            "SELECT device, count(*) FROM readings WHERE room = %s GROUP BY device ORDER BY device", (room,)
        ).fetchall()
    return [(str(device), int(str(count))) for device, count in rows]


def wait_stored(lab: RunningLab, room: str, devices: int, timeout: float = 30) -> list[tuple[str, int]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = stored(lab, room)
        if len(rows) >= devices or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_each_message_is_stored_once_and_both_replicas_take_a_share(
    replicas: tuple[RunningLab, list[str]], unique_room: str
) -> None:
    lab, urls = replicas
    publish(lab, unique_room, 0, BURST)
    rows = wait_stored(lab, unique_room, BURST)
    assert rows == [(f"d{n:04d}", 1) for n in range(BURST)]  # every value, once
    shares = [ingested(url, lab) for url in urls]
    assert sum(shares) == BURST
    assert min(shares) > 0, shares


def test_a_replica_killed_and_started_again_gets_what_the_broker_kept_for_it(
    replicas: tuple[RunningLab, list[str]], unique_room: str
) -> None:
    lab, urls = replicas
    table = lab.lab.table
    pid = table.pid("web-1")
    assert pid is not None
    table.stop("web-1", signal.SIGKILL)
    publish(lab, unique_room, 0, BURST)  # the broker queues the dead replica's share for it
    table.start(replica_spec(lab, 1))
    wait_ready(urls[0])
    rows = wait_stored(lab, unique_room, BURST)
    assert [device for device, _count in rows] == [f"d{n:04d}" for n in range(BURST)]
    assert ingested(urls[0], lab) > 0  # its share came to it when it returned


def test_the_share_of_a_replica_that_never_returns_is_taken_over(
    replicas: tuple[RunningLab, list[str]], unique_room: str
) -> None:
    lab, urls = replicas
    lab.lab.table.stop("web-1", signal.SIGKILL)
    publish(lab, unique_room, 0, BURST)  # half of it kept by the broker for the dead replica
    rows = wait_stored(lab, unique_room, BURST, timeout=60)
    assert [device for device, _count in rows] == [f"d{n:04d}" for n in range(BURST)]
    assert ingested(urls[1], lab) == BURST  # all of it through the survivor
    log = lab.lab.table.log_file("web-2").read_text()
    assert "taking over its broker session" in log
    deadline = time.monotonic() + 30
    while "drained the session of lab-portal-1" not in log:
        assert time.monotonic() < deadline, log[-2000:]
        time.sleep(0.2)
        log = lab.lab.table.log_file("web-2").read_text()
    # The dead replica's session left the group: what comes next all goes to the survivor at once
    publish(lab, unique_room, BURST, BURST)
    rows = wait_stored(lab, unique_room, 2 * BURST, timeout=20)
    assert len(rows) == 2 * BURST
    # It returns: it joins the group again under its own client id and takes its share back
    lab.lab.table.start(replica_spec(lab, 1))
    wait_ready(urls[0])
    publish(lab, unique_room, 2 * BURST, BURST)
    rows = wait_stored(lab, unique_room, 3 * BURST, timeout=20)
    assert rows == [(f"d{n:04d}", 1) for n in range(3 * BURST)]
    assert ingested(urls[0], lab) > 0


def test_a_replica_killed_under_load_loses_nothing(
    replicas: tuple[RunningLab, list[str]], unique_room: str
) -> None:
    """QoS 1 values keep coming while one replica is killed: every one is stored (a value the dead
    replica had stored but not yet acknowledged may be stored twice: at least once, never lost)."""
    lab, _urls = replicas
    total = 3000
    client = lab.mqtt_client(lab.env["MQTT_ADMIN_USER"], lab.env["MQTT_ADMIN_PASSWORD"])
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", lab.port("MQTT_PORT"))
    client.loop_start()
    try:
        sent = []
        for n in range(total):
            if n == total // 3:
                lab.lab.table.stop("web-1", signal.SIGKILL)
            sent.append(
                client.publish(f"{lab.env['TOPIC_ROOT']}/{unique_room}/d{n % 50:02d}/t", str(n), qos=1)
            )
            if n % 100 == 99:
                time.sleep(0.05)  # about 2,000 a second, over a second and a half
        for message in sent:
            message.wait_for_publish(timeout=30)
    finally:
        client.loop_stop()
        client.disconnect()
    deadline = time.monotonic() + 60
    while True:
        with lab.db() as db:
            values = {
                int(float(str(v)))
                for (v,) in db.execute(
                    "SELECT value_num FROM readings WHERE room = %s", (unique_room,)
                ).fetchall()
            }
        if len(values) == total or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert sorted(set(range(total)) - values)[:20] == []
