"""MQTT over WebSocket: the framing on its own, hostile servers, then the real broker and the lab.

The hostile servers are small asyncio servers here, each breaking the handshake or the framing
its own way; every one must end in a connect error with a reason, within the connect timeout.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stress import Broker, Scenario, run, timeline
from stress.check import CheckError, check
from stress.errors import ScenarioError
from stress.mqtt import codec
from stress.mqtt.codec import MQTT5, MQTT311, ConnectOptions
from stress.mqtt.session import ConnectError, Session, open_session
from stress.mqtt.websocket import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    FrameReader,
    Upgrade,
    WebSocketError,
    accept_key,
    answer_problem,
    client_frame,
    mask,
)
from stress.targets.lab import lab_port
from stress.targets.registry import build
from tests.certificates import self_signed
from tests.conftest import RunningLab
from tests.stress.plain_broker import PlainBroker

ATTRIBUTES = 3  # the thermostat publishes temperature, humidity and setpoint
VERSIONS = pytest.mark.parametrize("version", [MQTT311, MQTT5], ids=["3.1.1", "5"])

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# ---------------------------------------------------------------------------- framing on its own


def test_the_accept_key_is_the_one_of_rfc_6455() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65_535, 65_536, 70_001])
def test_a_client_frame_is_masked_and_says_its_length(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    frame = client_frame(BINARY, payload, b"\x01\x02\x03\x04")
    assert frame[0] == 0x82  # FIN, binary
    assert frame[1] & 0x80  # masked
    length, start = frame[1] & 0x7F, 2
    if length == 126:
        length, start = int.from_bytes(frame[2:4], "big"), 4
    elif length == 127:
        length, start = int.from_bytes(frame[2:10], "big"), 10
    assert length == size
    assert frame[start : start + 4] == b"\x01\x02\x03\x04"
    assert mask(frame[start + 4 :], b"\x01\x02\x03\x04") == payload


def server_frame(opcode: int, payload: bytes, *, final: bool = True) -> bytes:
    """A frame as a server sends it (never masked)."""
    size = len(payload)
    first = (0x80 if final else 0) | opcode
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65_536:
        return bytes((first, 126)) + size.to_bytes(2, "big") + payload
    return bytes((first, 127)) + size.to_bytes(8, "big") + payload


def test_fragments_and_control_frames_in_between_give_one_stream_split_anywhere() -> None:
    stream = (
        server_frame(BINARY, b"\x20\x02", final=False)
        + server_frame(PING, b"are you there")
        + server_frame(CONTINUATION, b"\x00", final=False)
        + server_frame(CONTINUATION, b"\x00")
        + server_frame(BINARY, b"x" * 70_000)
        + server_frame(CLOSE, b"\x03\xe8bye")
    )
    for step in (1, 3, 7, 4_116, len(stream)):
        reader = FrameReader()
        data, controls = b"", []
        for start in range(0, len(stream), step):
            got, more = reader.feed(stream[start : start + step])
            data += got
            controls += more
        assert data == b"\x20\x02\x00\x00" + b"x" * 70_000
        assert controls == [(PING, b"are you there"), (CLOSE, b"\x03\xe8bye")]


@pytest.mark.parametrize(
    ("frames", "problem"),
    [
        (bytes((0x82, 0x82)) + b"\x00\x00\x00\x00ab", "masked"),
        (bytes((0xC2, 0x00)), "reserved bits"),
        (server_frame(TEXT, b"hi"), "text frame"),
        (server_frame(CONTINUATION, b"hi"), "continuation"),
        (server_frame(BINARY, b"a", final=False) + server_frame(BINARY, b"b"), "before the end"),
        (server_frame(PING, b"p" * 126), "longer than 125"),
        (server_frame(PING, b"p", final=False), "fragmented"),
        (server_frame(0x3, b""), "unknown data opcode"),
        (server_frame(0xB, b""), "unknown control opcode"),
        (bytes((0x82, 127)) + (1 << 40).to_bytes(8, "big"), "larger than any MQTT packet"),
    ],
)
def test_frames_that_break_the_rules_are_named(frames: bytes, problem: str) -> None:
    with pytest.raises(WebSocketError, match=problem):
        FrameReader().feed(frames)


KEY = base64.b64encode(b"0123456789abcdef").decode()
GOOD = (
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Accept: {accept_key(KEY)}\r\nSec-WebSocket-Protocol: mqtt"
)


@pytest.mark.parametrize(
    ("answer", "reason", "said"),
    [
        ("HTTP/1.1 200 OK\r\nContent-Length: 0", "websocket-refused", "'HTTP/1.1 200 OK'"),
        ("HTTP/1.1 404 Not Found", "websocket-refused", "not 101 Switching Protocols"),
        ("SSH-2.0-OpenSSH_9.2", "websocket-handshake", "not HTTP"),
        (GOOD.replace(accept_key(KEY), accept_key("other")), "websocket-handshake", "Sec-WebSocket-Accept"),
        (GOOD.replace("\r\nSec-WebSocket-Protocol: mqtt", ""), "websocket-refused", "mqtt subprotocol"),
        (GOOD.replace("Protocol: mqtt", "Protocol: mqttv3.1"), "websocket-refused", "mqttv3.1"),
        (GOOD.replace("Upgrade: websocket", "Upgrade: h2c"), "websocket-handshake", "Upgrade: websocket"),
        (GOOD.replace("Connection: Upgrade", "Connection: close"), "websocket-handshake", "Connection"),
        (GOOD + "\r\nSec-WebSocket-Extensions: permessage-deflate", "websocket-handshake", "extension"),
    ],
)
def test_answers_that_open_no_mqtt_websocket_are_named(answer: str, reason: str, said: str) -> None:
    problem = answer_problem(answer.encode(), KEY)
    assert problem is not None
    assert problem[0] == reason
    assert said in problem[1]


def test_a_good_answer_in_any_header_case_opens() -> None:
    assert answer_problem(GOOD.encode(), KEY) is None
    shouted = GOOD.replace("Upgrade: websocket", "UPGRADE: WebSocket").replace("Connection:", "connection:")
    assert (
        answer_problem(shouted.replace("Sec-WebSocket-Accept", "sec-websocket-accept").encode(), KEY) is None
    )


# ---------------------------------------------------------------------------- servers of the test


async def read_request(reader: asyncio.StreamReader) -> dict[str, str]:
    """The headers of the client's upgrade request (names in lower case)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0].startswith("GET /mqtt HTTP/1.1")
    return {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    }


def accepted(headers: dict[str, str]) -> bytes:
    """A 101 that opens the WebSocket the client asked for."""
    assert headers["sec-websocket-protocol"] == "mqtt"
    assert headers["sec-websocket-version"] == "13"
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(headers['sec-websocket-key'])}\r\n"
        "Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    ).encode()


async def read_client_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One frame from the client: ``(opcode, unmasked payload)``; it must be masked and whole."""
    first, second = await reader.readexactly(2)
    assert first & 0x80, "a client frame that is not final"
    assert second & 0x80, "a client frame that is not masked"
    size = second & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    key = await reader.readexactly(4)
    return first & 0x0F, mask(await reader.readexactly(size), key)


async def connect_to(serve: Serve, *, timeout: float = 5.0, handler: Any = None) -> Session:
    """Open a session over WebSocket to a server running ``serve``."""
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        return await open_session(
            "127.0.0.1",
            port,
            ConnectOptions("ws-test"),
            handler,
            timeout=timeout,
            websocket=Upgrade(f"127.0.0.1:{port}"),
        )
    finally:
        server.close()


def refused(serve: Serve, timeout: float = 3.0) -> tuple[ConnectError, float]:
    """The connect error a server running ``serve`` ends in, and how long it took."""

    async def attempt() -> tuple[ConnectError, float]:
        started = time.monotonic()
        with pytest.raises(ConnectError) as caught:
            await connect_to(serve, timeout=timeout)
        return caught.value, time.monotonic() - started

    return asyncio.run(attempt())


async def answers_200(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\nhello")
    await reader.read()  # open until the client leaves


async def wrong_accept_key(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    headers = await read_request(reader)
    writer.write(accepted({**headers, "sec-websocket-key": "not the client's"}))
    await reader.read()


async def bad_frame(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(accepted(await read_request(reader)))
    await read_client_frame(reader)  # the CONNECT
    writer.write(server_frame(TEXT, b'{"connack": true}'))
    await reader.read()


async def closes_mid_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 101 Switch")
    await writer.drain()
    writer.close()


async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()


def test_a_plain_http_server_is_refused_with_its_status_line() -> None:
    error, took = refused(answers_200)
    assert error.reason == "websocket-refused"
    assert "'HTTP/1.1 200 OK'" in error.detail
    assert took < 2.0


def test_a_wrong_accept_key_is_a_handshake_error() -> None:
    error, took = refused(wrong_accept_key)
    assert error.reason == "websocket-handshake"
    assert "Sec-WebSocket-Accept" in error.detail
    assert took < 2.0


def test_a_bad_frame_is_a_protocol_error() -> None:
    error, took = refused(bad_frame)
    assert error.reason == "websocket-protocol"
    assert "text frame" in error.detail
    assert took < 2.0


def test_a_server_closing_mid_handshake_is_a_handshake_error() -> None:
    error, took = refused(closes_mid_handshake)
    assert error.reason == "websocket-handshake"
    assert "before answering the WebSocket upgrade" in error.detail
    assert took < 2.0


def test_a_server_that_never_answers_costs_the_connect_timeout() -> None:
    error, took = refused(never_answers, timeout=1.0)
    assert error.reason == "timeout"
    assert "no answer to the WebSocket upgrade" in error.detail
    assert 0.9 < took < 2.0


class Told:
    """A session handler that keeps how the connection ended."""

    def __init__(self) -> None:
        self.lost: list[tuple[str, str]] = []
        self.ended = asyncio.Event()

    def on_puback(self, packet_id: int, reason: int) -> None:
        pass

    def on_pubcomp(self, packet_id: int, reason: int, packet: str) -> None:
        pass

    def on_message(self, message: codec.Publish) -> None:
        pass

    def on_lost(self, reason: str, detail: str) -> None:
        self.lost.append((reason, detail))
        self.ended.set()

    def on_writable(self) -> None:
        pass


def test_fragments_pings_and_a_close_from_the_server() -> None:
    """CONNACK comes in two fragments with a ping between them (answered by a pong of the same
    payload); the server then closes the WebSocket, which is answered and ends the session."""
    seen: list[tuple[int, bytes]] = []

    async def scripted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(accepted(await read_request(reader)))
        seen.append(await read_client_frame(reader))  # the CONNECT
        writer.write(
            server_frame(BINARY, b"\x20", final=False)
            + server_frame(PING, b"still there?")
            + server_frame(CONTINUATION, b"\x02\x00\x00")
        )
        seen.append(await read_client_frame(reader))  # the pong
        await asyncio.sleep(0.1)
        writer.write(server_frame(CLOSE, (1001).to_bytes(2, "big") + b"going away"))
        seen.append(await read_client_frame(reader))  # the client's Close
        writer.close()

    async def scenario() -> Told:
        told = Told()
        session = await connect_to(scripted, handler=told)
        assert session.connected
        async with asyncio.timeout(3):
            await told.ended.wait()
        return told

    told = asyncio.run(scenario())
    (connect_op, connect), pong, close = seen
    assert connect_op == BINARY
    assert connect[0] == 0x10  # CONNECT
    assert pong == (PONG, b"still there?")
    assert close == (CLOSE, (1001).to_bytes(2, "big"))
    assert told.lost == [("connection-lost", "the server closed the WebSocket (close code 1001: going away)")]


def test_the_scenario_checks_the_transport_and_the_path() -> None:
    stages = timeline("steady", 1, 1.0, 1.0)
    with pytest.raises(ScenarioError, match="--ws-path 'mqtt' must be a URL path"):
        Scenario(target="mqtt", broker=Broker(transport="websocket", ws_path="mqtt"), stages=stages)
    with pytest.raises(ScenarioError, match="--ws-path '/a b'"):
        Scenario(target="mqtt", broker=Broker(transport="websocket", ws_path="/a b"), stages=stages)
    with pytest.raises(ScenarioError, match="--transport 'quic'"):
        Scenario(target="mqtt", broker=Broker(transport="quic"), stages=stages)  # type: ignore[arg-type]
    thingsboard = Scenario(target="thingsboard", broker=Broker(transport="websocket"), stages=stages)
    with pytest.raises(ScenarioError, match=r"^--transport websocket is for --target lab and mqtt"):
        build(thingsboard)


def test_the_lab_port_follows_the_transport() -> None:
    env = {"MQTT_PORT": "1883", "MQTT_WS_PORT": "9001", "MQTT_TLS_PORT": "8883"}
    assert lab_port(env, None) == 1883
    assert lab_port(env, None, transport="websocket") == 9001
    assert lab_port(env, None, tls=True) == 8883
    assert lab_port(env, 7000, transport="websocket", tls=True) == 7000  # --port wins
    with pytest.raises(ScenarioError, match=r"the lab's WebSocket listener \(MQTT_WS_PORT\) has no TLS"):
        lab_port(env, None, transport="websocket", tls=True)
    with pytest.raises(ScenarioError, match="MQTT_WS_PORT='x'"):
        lab_port({"MQTT_WS_PORT": "x"}, None, transport="websocket")


# ---------------------------------------------------------------------------- the real broker


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def ws_broker(certificate: Path) -> Iterator[PlainBroker]:
    """Mosquitto with WebSocket listeners, plain and with TLS (a self-signed certificate)."""
    instance = PlainBroker(tls=(certificate, certificate.with_name("server.key")), websocket=True)
    instance.start()
    yield instance
    instance.close()


def ws_scenario(broker: Broker, out: Path, **changes: Any) -> Scenario:
    return Scenario(
        target="mqtt",
        broker=broker,
        stages=timeline("steady", 10, 0.5, 3.0),
        out=out,
        e2e_devices=0,
        drain=3.0,
        options={"root": f"ws{uuid.uuid4().hex[:8]}"},
        **changes,
    )


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
@pytest.mark.parametrize("qos", [1, 2])
def test_a_run_over_websocket_gets_every_message_through(
    ws_broker: PlainBroker, tmp_path: Path, protocol: str, qos: int
) -> None:
    assert ws_broker.ws_port is not None
    broker = Broker(port=ws_broker.ws_port, protocol=protocol, transport="websocket")  # type: ignore[arg-type]
    summary = run(ws_scenario(broker, tmp_path / "run", qos=qos), quiet=True)
    assert summary["sent"] == summary["offered"] == 10 * 6 * ATTRIBUTES
    assert summary["acked"] == summary["sent"]
    assert summary["failed"] == 0
    assert summary["errors_by_reason"] == {}
    assert summary["connections_peak"] == 10


@pytest.mark.integration
def test_a_run_over_websocket_with_tls_gets_every_message_through(
    ws_broker: PlainBroker, certificate: Path, tmp_path: Path
) -> None:
    assert ws_broker.wss_port is not None
    broker = Broker(port=ws_broker.wss_port, tls=True, ca_file=certificate, transport="websocket")
    summary = run(ws_scenario(broker, tmp_path / "run", qos=1), quiet=True)
    assert summary["acked"] == summary["sent"] == 10 * 6 * ATTRIBUTES
    assert summary["errors_by_reason"] == {}


class Receiver(Told):
    """Keeps the messages and acknowledgements too."""

    def __init__(self) -> None:
        super().__init__()
        self.session: Session | None = None
        self.messages: list[codec.Publish] = []
        self.acks: list[int] = []
        self.writable = asyncio.Event()

    def on_puback(self, packet_id: int, reason: int) -> None:
        self.acks.append(packet_id)

    def on_message(self, message: codec.Publish) -> None:
        self.messages.append(message)
        if self.session is not None and message.qos:
            self.session.ack(message.packet_id, message.qos)

    def on_writable(self) -> None:
        self.writable.set()


@pytest.mark.integration
@VERSIONS
def test_a_message_larger_than_the_brokers_writes_comes_whole(ws_broker: PlainBroker, version: int) -> None:
    """The broker writes a WebSocket frame 4 KiB at a time: a 12 KB message arrives in pieces."""
    assert ws_broker.ws_port is not None
    port = ws_broker.ws_port
    topic = f"ws/{uuid.uuid4().hex}"
    payload = bytes(range(256)) * 48

    async def scenario() -> None:
        receiver = Receiver()
        options = ConnectOptions(f"t-{uuid.uuid4().hex[:10]}", version=version)
        session = await open_session(
            "127.0.0.1", port, options, receiver, websocket=Upgrade(f"127.0.0.1:{port}")
        )
        receiver.session = session
        assert await session.subscribe([(topic, 1)], timeout=5) == [1]
        session.write(codec.publish(topic, payload, 1, 1, version), 0.0)
        async with asyncio.timeout(10):
            while not receiver.messages or not receiver.acks:
                await asyncio.sleep(0.02)
        assert [m.payload for m in receiver.messages] == [payload]
        assert receiver.acks == [1]
        session.close()

    asyncio.run(scenario())


@pytest.mark.integration
def test_writing_to_a_frozen_broker_over_websocket_pauses_then_resumes(tmp_path: Path) -> None:
    """Back-pressure as over TCP: the session says ``paused`` once the kernel takes no more, and
    ``on_writable`` once the broker reads again."""
    frozen = PlainBroker(websocket=True)
    frozen.start()
    assert frozen.ws_port is not None
    port = frozen.ws_port

    async def scenario() -> None:
        receiver = Receiver()
        session = await open_session(
            "127.0.0.1", port, ConnectOptions("ws-frozen"), receiver, websocket=Upgrade(f"127.0.0.1:{port}")
        )
        frozen.pause()
        chunk = codec.publish("ws/frozen", b"x" * 60_000)
        written = 0
        while not session.paused and written < 200_000_000:
            session.write(chunk, 0.0)
            written += len(chunk)
            await asyncio.sleep(0)
        assert session.paused
        frozen.resume()
        async with asyncio.timeout(30):
            await receiver.writable.wait()
        assert not session.paused
        session.abort()

    try:
        asyncio.run(scenario())
    finally:
        frozen.close()


@pytest.mark.integration
def test_check_over_websocket_and_a_clear_line_for_a_port_that_is_not_one(
    ws_broker: PlainBroker, tmp_path: Path
) -> None:
    assert ws_broker.ws_port is not None
    websocket = Broker(port=ws_broker.ws_port, transport="websocket")
    line = check(ws_scenario(websocket, tmp_path / "run"))
    assert line.startswith(f"ok: mqtt at ws://127.0.0.1:{ws_broker.ws_port}/mqtt (MQTT 3.1.1) accepted")
    mqtt_port = Broker(port=ws_broker.port, transport="websocket", ws_path="/mqtt")
    with pytest.raises(CheckError) as caught:
        check(ws_scenario(mqtt_port, tmp_path / "run", connect_timeout=3.0))
    message = str(caught.value)
    assert "[websocket-handshake]" in message
    assert "is it a WebSocket listener" in message


@pytest.mark.integration
def test_the_lab_takes_a_fleet_over_its_websocket_listener(lab: RunningLab, tmp_path: Path) -> None:
    env = lab.env
    port = lab_port(env, None, transport="websocket")
    assert port == lab.port("MQTT_WS_PORT")
    scenario = Scenario(
        target="lab",
        broker=Broker(port=port, transport="websocket"),
        stages=timeline("steady", 3, 0.5, 2.0),
        out=tmp_path / "run",
        qos=1,
        prefix="wslab",
        e2e_devices=0,
        drain=3.0,
        options={
            "root": env["TOPIC_ROOT"],
            "username": env["LAB_FLEET_USER"],
            "password": env["LAB_FLEET_PASSWORD"],
        },
    )
    summary = run(scenario, quiet=True)
    assert summary["sent"] == 3 * 4 * ATTRIBUTES
    assert summary["acked"] == summary["sent"]
    assert summary["errors_by_reason"] == {}


@pytest.mark.integration
def test_the_command_line_runs_qos2_over_the_labs_websocket_with_every_message_through(
    lab: RunningLab, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "stress",
        "run",
        "--target",
        "lab",
        "--env-file",
        str(lab.config.env_file),
    ]
    command += ["--transport", "websocket", "--qos", "2", "--devices", "3", "--interval", "0.5"]
    command += ["--duration", "2", "--prefix", "wscli", "--out", str(out), "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["qos"] == 2
    assert summary["sent"] > 0
    assert summary["acked"] == summary["sent"]  # every PUBCOMP came back
    assert summary["errors_by_reason"] == {}
    assert summary["observed"] == summary["sampled"] > 0  # and the observer saw them arrive
