"""The client session against the real broker, in MQTT 3.1.1 and 5 (the codec's conformance)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from stress.mqtt import codec
from stress.mqtt.codec import MQTT5, MQTT311, ConnectOptions
from stress.mqtt.session import ConnectError, Session, open_session
from tests.certificates import self_signed
from tests.stress.conftest import USERS
from tests.stress.plain_broker import PlainBroker

pytestmark = pytest.mark.integration
VERSIONS = pytest.mark.parametrize("version", [MQTT311, MQTT5], ids=["3.1.1", "5"])


class Recorder:
    """A session handler that keeps everything it is told."""

    def __init__(self, session_to_ack: list[Session] | None = None) -> None:
        self.session_to_ack = session_to_ack  # acknowledge inbound QoS 1 at once, as a device does
        self.acks: list[tuple[int, int]] = []
        self.messages: list[codec.Publish] = []
        self.lost: list[tuple[str, str]] = []
        self.arrived = asyncio.Event()

    def on_puback(self, packet_id: int, reason: int) -> None:
        self.acks.append((packet_id, reason))
        self.arrived.set()

    def on_pubcomp(self, packet_id: int, reason: int, packet: str) -> None:
        self.acks.append((packet_id, reason))
        self.arrived.set()

    def on_message(self, message: codec.Publish) -> None:
        self.messages.append(message)
        if self.session_to_ack and message.qos:
            self.session_to_ack[0].ack(message.packet_id)
        self.arrived.set()

    def on_lost(self, reason: str, detail: str) -> None:
        self.lost.append((reason, detail))
        self.arrived.set()

    def on_writable(self) -> None:
        pass

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.arrived.clear()
                await self.arrived.wait()


def run(coroutine: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coroutine())  # type: ignore[arg-type]


def options(version: int, **overrides: Any) -> ConnectOptions:
    return ConnectOptions(client_id=f"t-{uuid.uuid4().hex[:10]}", version=version, **overrides)


@VERSIONS
@pytest.mark.parametrize("qos", [0, 1])
def test_round_trip_through_the_broker(broker: PlainBroker, version: int, qos: int) -> None:
    topic = f"conformance/{uuid.uuid4().hex}/value"

    async def scenario() -> None:
        holder: list[Session] = []
        recorder = Recorder(holder)
        session = await open_session("127.0.0.1", broker.port, options(version), recorder)
        holder.append(session)
        assert await session.subscribe([(topic, qos)], timeout=5) == [qos]
        code = codec.TopicCode(topic, version)
        payloads = [f"{n}.5".encode() for n in range(1, 101)]
        session.write(b"".join(code.publish(p, qos, n) for n, p in enumerate(payloads, 1)), 0.0)
        await recorder.until(lambda: len(recorder.messages) == 100 and len(recorder.acks) == 100 * qos)
        assert [m.payload for m in recorder.messages] == payloads
        assert {m.qos for m in recorder.messages} == {qos}
        if qos:  # more than the broker's in-flight window (20): only acking lets the rest through
            assert sorted(recorder.acks) == [(n, 0) for n in range(1, 101)]
        session.close()

    run(scenario)


@VERSIONS
def test_an_acknowledged_inbound_message_is_not_redelivered(broker: PlainBroker, version: int) -> None:
    topic = f"conformance/{uuid.uuid4().hex}"
    client_id = f"t-{uuid.uuid4().hex[:10]}"
    persistent = ConnectOptions(client_id, clean=False, version=version, session_expiry=300)

    async def scenario() -> None:
        recorder = Recorder()
        session = await open_session("127.0.0.1", broker.port, persistent, recorder)
        await session.subscribe([(topic, 1)], timeout=5)
        sender = await open_session("127.0.0.1", broker.port, options(version))
        sender.write(codec.publish(topic, b"once", 1, 9, version), 0.0)
        await recorder.until(lambda: len(recorder.messages) == 1)
        session.ack(recorder.messages[0].packet_id)
        await asyncio.sleep(0.2)
        session.close()
        again = Recorder()
        resumed = await open_session("127.0.0.1", broker.port, persistent, again)
        await asyncio.sleep(0.5)
        assert again.messages == []
        resumed.close()
        sender.close()

    run(scenario)


@VERSIONS
def test_bad_credentials_are_classified(auth_broker: PlainBroker, version: int) -> None:
    async def scenario() -> ConnectError:
        with pytest.raises(ConnectError) as refused:
            await open_session(
                "127.0.0.1", auth_broker.port, options(version, username="fleet", password="wrong")
            )
        return refused.value

    error = run(scenario)
    assert error.reason in {"connack-bad-credentials", "connack-not-authorized"}
    assert "CONNACK" in error.detail


@VERSIONS
def test_good_credentials_connect(auth_broker: PlainBroker, version: int) -> None:
    async def scenario() -> None:
        session = await open_session(
            "127.0.0.1", auth_broker.port, options(version, username="fleet", password=USERS["fleet"])
        )
        assert session.connected
        session.close()

    run(scenario)


def test_a_closed_port_is_tcp_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused

        async def scenario() -> None:
            with pytest.raises(ConnectError) as refused:
                await open_session("127.0.0.1", port, options(MQTT311), timeout=2)
            assert refused.value.reason == "tcp-refused"

        run(scenario)


def test_a_listener_that_never_answers_times_out() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)  # accepts the TCP connection, never sends CONNACK

        async def scenario() -> None:
            with pytest.raises(ConnectError) as refused:
                await open_session("127.0.0.1", sock.getsockname()[1], options(MQTT311), timeout=0.5)
            assert refused.value.reason == "timeout"

        run(scenario)


@VERSIONS
def test_keepalive_pings_keep_an_idle_session_open(broker: PlainBroker, version: int) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        session = await open_session("127.0.0.1", broker.port, options(version, keepalive=2), recorder)
        loop = asyncio.get_running_loop()
        end = loop.time() + 5  # the broker drops a silent client after 1.5 x keep-alive = 3 s
        while loop.time() < end:
            assert session.keepalive_due(loop.time()) is None
            await asyncio.sleep(0.25)
        assert session.connected
        assert session.pongs >= 2
        assert recorder.lost == []
        session.close()

    run(scenario)


def test_a_frozen_broker_is_detected_by_keepalive(own_broker: PlainBroker) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        session = await open_session("127.0.0.1", own_broker.port, options(MQTT311, keepalive=2), recorder)
        own_broker.pause()
        loop = asyncio.get_running_loop()
        reasons: list[str] = []
        async with asyncio.timeout(6):
            while not reasons:
                reason = session.keepalive_due(loop.time())
                if reason:
                    reasons.append(reason)
                await asyncio.sleep(0.1)
        await recorder.until(lambda: bool(recorder.lost))
        assert reasons == ["keepalive-timeout"]
        assert recorder.lost[0][0] == "keepalive-timeout"

    try:
        run(scenario)
    finally:
        own_broker.resume()


@VERSIONS
def test_the_will_is_published_retained_when_the_connection_is_cut_and_not_after_a_disconnect(
    broker: PlainBroker, version: int
) -> None:
    """The Last Will of a CONNECT (the lab's presence: ``lost``, retained, QoS 1), read back from
    the real broker by a subscriber that comes later: there after an abort, absent after a clean end."""
    cut, clean = (f"conformance/{uuid.uuid4().hex}/$state" for _ in range(2))

    def will(topic: str) -> codec.Will:
        return codec.Will(topic, b'{"value":"lost"}', qos=1, retain=True)

    async def scenario() -> tuple[list[codec.Publish], list[codec.Publish]]:
        aborted = await open_session("127.0.0.1", broker.port, options(version, will=will(cut)))
        closed = await open_session("127.0.0.1", broker.port, options(version, will=will(clean)))
        aborted.abort()
        closed.close()
        await asyncio.sleep(0.5)
        late = Recorder()
        watcher = await open_session("127.0.0.1", broker.port, options(version), late)
        await watcher.subscribe([(cut, 1), (clean, 1)], timeout=5)
        await late.until(lambda: bool(late.messages))
        await asyncio.sleep(0.3)
        watcher.close()
        return [m for m in late.messages if m.topic == cut], [m for m in late.messages if m.topic == clean]

    lost, goodbye = run(scenario)
    assert [(m.payload, m.retain) for m in lost] == [(b'{"value":"lost"}', True)]
    assert goodbye == []


def test_a_will_with_a_qos_beyond_2_is_refused() -> None:
    with pytest.raises(ValueError, match="a will's QoS is 0, 1 or 2"):
        codec.connect(options(MQTT311, will=codec.Will("t", b"x", qos=3)))


@VERSIONS
def test_a_second_session_with_the_same_id_takes_over(broker: PlainBroker, version: int) -> None:
    same = options(version)

    async def scenario() -> list[tuple[str, str]]:
        recorder = Recorder()
        await open_session("127.0.0.1", broker.port, same, recorder)
        second = await open_session("127.0.0.1", broker.port, same)
        await recorder.until(lambda: bool(recorder.lost))
        second.close()
        return recorder.lost

    # Mosquitto 2.0 closes the older connection without an MQTT 5 DISCONNECT (0x8E)
    assert [reason for reason, _ in run(scenario)] == ["connection-lost"]


@pytest.mark.parametrize(
    ("version", "reasons"),
    # 3.1.1 has no DISCONNECT from the broker: the socket closes (reset, as unread bytes remain)
    [(MQTT311, {"connection-reset", "connection-lost"}), (MQTT5, {"server-disconnect-packet-too-large"})],
    ids=["3.1.1", "5"],
)
def test_a_broker_disconnect_is_classified_by_its_reason_code(version: int, reasons: set[str]) -> None:
    small = PlainBroker(extra="max_packet_size 100\n")
    small.start()

    async def scenario() -> list[tuple[str, str]]:
        recorder = Recorder()
        session = await open_session("127.0.0.1", small.port, options(version), recorder)
        session.write(codec.publish("big/one", b"x" * 200, 1, 1, version), 0.0)
        await recorder.until(lambda: bool(recorder.lost))
        return recorder.lost

    try:
        [(lost, detail)] = run(scenario)
    finally:
        small.close()
    assert lost in reasons
    assert detail


def test_mqtt5_receive_maximum_is_read_from_the_connack(own_broker: PlainBroker) -> None:
    async def scenario() -> Session:
        session = await open_session("127.0.0.1", own_broker.port, options(MQTT5))
        session.close()
        return session

    session = run(scenario)
    assert 1 <= session.receive_maximum <= 65_535


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    cert = self_signed(tmp_path_factory.mktemp("tls"))
    return cert, cert.with_name("server.key")


@VERSIONS
def test_tls_round_trip_and_an_untrusted_certificate(certificate: tuple[Path, Path], version: int) -> None:
    tls_broker = PlainBroker(tls=certificate)
    tls_broker.start()
    assert tls_broker.tls_port is not None
    port = tls_broker.tls_port
    trusted = ssl.create_default_context(cafile=str(certificate[0]))

    async def scenario() -> None:
        recorder = Recorder()
        session = await open_session(
            "127.0.0.1", port, options(version), recorder, tls=trusted, server_hostname="127.0.0.1"
        )
        await session.subscribe([("secure/t", 1)], timeout=5)
        session.write(codec.publish("secure/t", b"42", 1, 1, version), 0.0)
        await recorder.until(lambda: len(recorder.messages) == 1 and len(recorder.acks) == 1)
        session.close()
        with pytest.raises(ConnectError) as refused:
            await open_session(
                "127.0.0.1",
                port,
                options(version),
                tls=ssl.create_default_context(),
                server_hostname="127.0.0.1",
            )
        assert refused.value.reason == "tls-verify"

    try:
        run(scenario)
    finally:
        tls_broker.close()
