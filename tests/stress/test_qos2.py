"""QoS 2: the session's exchanges on their own, then against the real broker, then whole runs.

A QoS 2 message is in flight from its PUBLISH to its PUBCOMP; a refusing PUBREC or PUBCOMP
(MQTT 5) ends it and is counted under its reason. Inbound, the session answers PUBREL with
PUBCOMP and delivers a message the broker sends again before its PUBREL only once.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from stress import Broker, Scenario, run, timeline
from stress.errors import ScenarioError
from stress.mqtt import codec
from stress.mqtt.codec import MQTT5, MQTT311, ConnectOptions
from stress.mqtt.session import Session, open_session
from stress.targets.registry import build
from tests.mqtt_helpers import connect
from tests.stress.conftest import USERS
from tests.stress.plain_broker import PlainBroker

ATTRIBUTES = 3  # the thermostat publishes temperature, humidity and setpoint
VERSIONS = pytest.mark.parametrize("version", [MQTT311, MQTT5], ids=["3.1.1", "5"])
PROTOCOLS = pytest.mark.parametrize("protocol", ["3.1.1", "5"])
#: Payloads that name their message, so a subscriber can tell a duplicate from a new one.
NUMBERED = '{{"value":{value},"seq":{seq},"ts":{ts}}}'


class Handler:
    """A session handler that keeps what it is told (and acknowledges inbound messages)."""

    def __init__(self) -> None:
        self.session: Session | None = None
        self.messages: list[codec.Publish] = []
        self.ends: list[tuple[int, int, str]] = []
        self.acks: list[tuple[int, int]] = []
        self.arrived = asyncio.Event()

    def on_puback(self, packet_id: int, reason: int) -> None:
        self.acks.append((packet_id, reason))

    def on_pubcomp(self, packet_id: int, reason: int, packet: str) -> None:
        self.ends.append((packet_id, reason, packet))
        self.arrived.set()

    def on_message(self, message: codec.Publish) -> None:
        self.messages.append(message)
        if message.qos and self.session is not None:
            self.session.ack(message.packet_id, message.qos)
        self.arrived.set()

    def on_lost(self, reason: str, detail: str) -> None:
        raise AssertionError(f"lost: {reason} {detail}")

    def on_writable(self) -> None:
        pass

    async def until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.arrived.clear()
                await self.arrived.wait()


class Wire:
    """A transport that keeps what the session writes."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def abort(self) -> None:
        raise AssertionError("the session gave up on a well-formed exchange")

    def close(self) -> None:
        pass


def connected(version: int, handler: Handler) -> tuple[Session, Wire]:
    """A session past its CONNACK on a :class:`Wire` (call inside a running loop)."""
    session = Session(ConnectOptions("qos2", version=version), handler)
    handler.session = session
    wire = Wire()
    session.connection_made(wire)  # type: ignore[arg-type]
    session.data_received(b"\x20\x03\x00\x00\x00" if version == MQTT5 else b"\x20\x02\x00\x00")
    wire.written.clear()  # (the CONNECT)
    return session, wire


def in_loop(check: Callable[[], None]) -> None:
    async def body() -> None:
        check()

    asyncio.run(body())


# ---------------------------------------------------------------------------- the session on its own


@VERSIONS
def test_an_accepting_pubrec_is_answered_with_pubrel_and_the_pubcomp_ends_the_exchange(version: int) -> None:
    def check() -> None:
        handler = Handler()
        session, wire = connected(version, handler)
        session.data_received(b"\x50\x02\x00\x07" + b"\x50\x02\x00\x08")
        assert wire.written == [codec.pubrel(7) + codec.pubrel(8)]  # one write for the batch
        assert handler.ends == []
        session.data_received(b"\x70\x02\x00\x07")
        assert handler.ends == [(7, 0, "pubcomp")]

    in_loop(check)


def test_an_mqtt5_refusal_by_pubrec_ends_the_exchange_without_pubrel_and_pubcomp_refusals_count() -> None:
    def check() -> None:
        handler = Handler()
        session, wire = connected(MQTT5, handler)
        session.data_received(b"\x50\x04\x00\x07\x87\x00")  # not authorized, no properties
        session.data_received(b"\x70\x03\x00\x08\x92")  # PUBCOMP: packet identifier not found
        assert wire.written == []
        assert handler.ends == [(7, 0x87, "pubrec"), (8, 0x92, "pubcomp")]

    in_loop(check)


@VERSIONS
def test_an_inbound_qos2_message_is_delivered_once_and_its_pubrel_answered(version: int) -> None:
    def check() -> None:
        handler = Handler()
        session, wire = connected(version, handler)
        message = codec.publish("cmd/dev00001/setpoint", b"21", 2, 5, version)
        session.data_received(message)
        assert [m.payload for m in handler.messages] == [b"21"]
        assert wire.written == [codec.pubrec(5)]  # the handler's acknowledgement
        again = bytes((message[0] | 0x08,)) + message[1:]  # sent again (DUP) before the PUBREL
        session.data_received(again)
        assert len(handler.messages) == 1
        assert wire.written[-1] == codec.pubrec(5)
        session.data_received(codec.pubrel(5))
        assert wire.written[-1] == codec.pubcomp(5)
        session.data_received(codec.publish("cmd/dev00001/setpoint", b"22", 2, 5, version))
        assert [m.payload for m in handler.messages] == [b"21", b"22"]  # the id is free again

    in_loop(check)


def test_a_truncated_pubrec_is_a_protocol_error() -> None:
    async def body() -> str:
        session = Session(ConnectOptions("qos2"), None)
        aborted: list[bool] = []
        wire = Wire()
        wire.abort = lambda: aborted.append(True)  # type: ignore[method-assign]
        session.connection_made(wire)  # type: ignore[arg-type]
        session.data_received(b"\x20\x02\x00\x00" + b"\x50\x01\x00")
        assert aborted
        assert session._lost_reason is not None
        return session._lost_reason[0]

    assert asyncio.run(body()) == "protocol"


def test_thingsboard_refuses_qos2_in_one_line_naming_the_target() -> None:
    scenario = Scenario(target="thingsboard", broker=Broker(), stages=timeline("steady", 1, 1.0, 1.0), qos=2)
    with pytest.raises(ScenarioError, match=r"^--qos 2 is not for --target thingsboard") as refused:
        build(scenario)
    assert "\n" not in str(refused.value)


def test_qos_3_is_refused() -> None:
    with pytest.raises(ScenarioError, match="--qos must be 0, 1 or 2"):
        Scenario(target="mqtt", broker=Broker(), stages=timeline("steady", 1, 1.0, 1.0), qos=3)


# ---------------------------------------------------------------------------- against the real broker


@pytest.fixture(scope="module")
def unbounded() -> Iterator[PlainBroker]:
    """A broker with no limit on the QoS 2 messages it has in flight to a client.

    Mosquitto 2.0.11 (Debian 12) leaves outgoing QoS 2 messages queued behind a full in-flight
    window (20 by default) until another message for that client arrives, so a subscriber would
    wait for the tail of a run for ever; its fixes of the in-flight quota came in 2.0.13.
    """
    instance = PlainBroker(extra="max_inflight_messages 0\n")
    instance.start()
    yield instance
    instance.close()


@pytest.mark.integration
@VERSIONS
def test_qos2_round_trip_through_the_broker(unbounded: PlainBroker, version: int) -> None:
    topic = f"conformance/{uuid.uuid4().hex}/value"
    payloads = [f"{n}.5".encode() for n in range(1, 101)]  # more than a default window (20)

    async def scenario() -> None:
        handler = Handler()
        options = ConnectOptions(f"t-{uuid.uuid4().hex[:10]}", version=version)
        session = await open_session("127.0.0.1", unbounded.port, options, handler)
        handler.session = session
        assert await session.subscribe([(topic, 2)], timeout=5) == [2]
        code = codec.TopicCode(topic, version)
        session.write(b"".join(code.publish(p, 2, n) for n, p in enumerate(payloads, 1)), 0.0)
        await handler.until(lambda: len(handler.messages) == 100 and len(handler.ends) == 100)
        await asyncio.sleep(0.3)  # nothing more comes
        assert [m.payload for m in handler.messages] == payloads
        assert {m.qos for m in handler.messages} == {2}
        assert sorted(handler.ends) == [(n, 0, "pubcomp") for n in range(1, 101)]
        assert handler.acks == []
        session.close()

    asyncio.run(scenario())


class Subscriber:
    """A paho client subscribed at QoS 2 that counts each (topic, payload) it receives."""

    def __init__(self, port: int, topic_filter: str, **login: str) -> None:
        self.received: Counter[tuple[str, bytes]] = Counter()
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.max_inflight_messages_set(100)
        if login:
            self.client.username_pw_set(login["username"], login["password"])
        subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: subscribed.set()
        assert not connect(self.client, port).is_failure
        self.client.subscribe(topic_filter, qos=2)
        assert subscribed.wait(5), "no SUBACK"

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        assert message.qos == 2
        with self.lock:
            self.received[(message.topic, bytes(message.payload))] += 1

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.total() < count and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # and nothing more

    def total(self) -> int:
        with self.lock:
            return sum(self.received.values())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def root() -> str:
    return f"q2{uuid.uuid4().hex[:8]}"


@pytest.fixture
def subscriber(unbounded: PlainBroker, root: str) -> Iterator[Subscriber]:
    instance = Subscriber(unbounded.port, f"{root}/#")
    yield instance
    instance.close()


def qos2_scenario(port: int, out: Path, root: str, **changes: Any) -> Scenario:
    options = {"root": root, "payload": NUMBERED, **changes.pop("options", {})}
    return Scenario(
        target="mqtt",
        broker=Broker(port=port, protocol=changes.pop("protocol", "3.1.1")),
        stages=timeline("steady", changes.pop("devices", 10), changes.pop("interval", 0.5), 3.0),
        out=out,
        qos=2,
        e2e_devices=changes.pop("e2e_devices", 0),
        drain=5.0,
        options=options,
        **changes,
    )


def events(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


@pytest.mark.integration
@PROTOCOLS
def test_a_qos2_run_delivers_every_message_exactly_once(
    unbounded: PlainBroker, subscriber: Subscriber, root: str, tmp_path: Path, protocol: str
) -> None:
    summary = run(
        qos2_scenario(unbounded.port, tmp_path / "run", root, protocol=protocol, e2e_devices=5), quiet=True
    )
    sent = summary["sent"]
    assert sent == summary["offered"] == 10 * 6 * ATTRIBUTES  # 3 s at 0.5 s
    assert summary["acked"] == sent  # every PUBCOMP came
    assert summary["failed"] == 0
    assert summary["errors_by_reason"] == {}
    assert summary["latency_ms"]["ack"]["count"] == sent  # timed to the PUBCOMP
    subscriber.wait_for(sent)
    assert subscriber.total() == sent
    assert set(subscriber.received.values()) == {1}  # no duplicates


@pytest.mark.integration
def test_qos2_in_capacity_mode_keeps_the_window_and_loses_nothing(
    unbounded: PlainBroker, subscriber: Subscriber, root: str, tmp_path: Path
) -> None:
    summary = run(qos2_scenario(unbounded.port, tmp_path / "run", root, devices=2, interval=0.0), quiet=True)
    sent = summary["sent"]
    assert sent > 100
    assert summary["acked"] == sent
    assert summary["errors_by_reason"] == {}
    subscriber.wait_for(sent, timeout=60)
    assert subscriber.total() == sent
    assert set(subscriber.received.values()) == {1}


@pytest.fixture
def read_only_fleet() -> Iterator[PlainBroker]:
    """A broker whose fleet account may read everything and publish nothing."""
    instance = PlainBroker(users=USERS)
    acl = instance.dir / "acl"
    acl.write_text("user fleet\ntopic read #\n")
    config = instance.dir / "mosquitto.conf"
    config.write_text(config.read_text() + f"acl_file {acl}\n")
    instance.start()
    yield instance
    instance.close()


@pytest.mark.integration
def test_an_mqtt5_broker_refusing_the_messages_is_counted_under_its_reason(
    read_only_fleet: PlainBroker, root: str, tmp_path: Path
) -> None:
    login = {"username": "fleet", "password": USERS["fleet"]}
    summary = run(
        qos2_scenario(read_only_fleet.port, tmp_path / "run", root, protocol="5", options=login), quiet=True
    )
    sent = summary["sent"]
    assert sent == 10 * 6 * ATTRIBUTES
    assert summary["acked"] == 0
    assert summary["errors_by_reason"] == {"pubrec-not-authorized": sent}  # PUBREC 0x87
    assert summary["errors_by_stage"] == {"ack": {"pubrec-not-authorized": sent}}
    assert summary["latency_ms"]["ack"]["count"] == 0


@pytest.mark.integration
def test_mqtt311_has_no_way_to_refuse_so_the_exchange_completes(
    read_only_fleet: PlainBroker, root: str, tmp_path: Path
) -> None:
    watcher = Subscriber(read_only_fleet.port, f"{root}/#", username="watcher", password=USERS["watcher"])
    login = {"username": "fleet", "password": USERS["fleet"]}
    try:
        summary = run(qos2_scenario(read_only_fleet.port, tmp_path / "run", root, options=login), quiet=True)
        watcher.wait_for(1, timeout=1.0)
    finally:
        watcher.close()
    assert summary["acked"] == summary["sent"] > 0  # a PUBREC without a reason, then PUBCOMP
    assert watcher.total() == 0  # yet the broker dropped every one


@pytest.mark.integration
def test_commands_sent_at_qos2_are_obeyed_once(unbounded: PlainBroker, root: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    base = qos2_scenario(
        unbounded.port, out, root, devices=1, options={"command_topic": "{root}/cmd/{device}/{attr}"}
    )
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    assert not connect(client, unbounded.port).is_failure

    def commands() -> None:
        time.sleep(1.5)  # the device is connected and subscribed
        for value in ("21", "22", "23"):
            client.publish(f"{root}/cmd/dev00001/setpoint", value, qos=2).wait_for_publish(5)

    sender = threading.Thread(target=commands)
    sender.start()
    run(base, quiet=True)
    sender.join()
    client.disconnect()
    client.loop_stop()
    assert [e["value"] for e in events(out) if e["event"] == "command"] == ["21", "22", "23"]
