"""The portal's fast MQTT read path against stock paho-mqtt, on the same bytes.

`PortalClient` decodes PUBLISH packets itself and acknowledges in batches; whatever stream the
broker sends, it must deliver exactly what stock paho delivers (same topics, payloads, ids, QoS,
flags, in order), however the bytes are split across reads.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from tests.web.portal_testing import property_test
from web.mqtt_client import BufferedSocket, PortalClient
from wire.mqtt import publish_packet

Delivered = tuple[bytes, bytes, int, int, bool, bool]


def publish(
    topic: bytes, payload: bytes, qos: int = 1, mid: int = 1, *, retain: bool = False, dup: bool = False
) -> bytes:
    return publish_packet(topic, payload, qos, mid, retain=retain, dup=dup)


@contextmanager
def wired(client: mqtt.Client) -> Iterator[tuple[socket.socket, list[Delivered]]]:
    """`client` as if connected, reading from one end of a socket pair; yields the other end."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    delivered: list[Delivered] = []

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        raw_topic: bytes = message._topic
        delivered.append(
            (raw_topic, bytes(message.payload), message.mid, message.qos, message.retain, message.dup)
        )

    client.on_message = on_message
    client.manual_ack_set(True)
    client._sock = BufferedSocket(ours) if isinstance(client, PortalClient) else ours
    client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED  # type: ignore[attr-defined]
    try:
        yield theirs, delivered
    finally:
        ours.close()
        theirs.close()


def feed(client: mqtt.Client, peer: socket.socket, chunks: list[bytes], delivered: list[Delivered]) -> None:
    """Send each chunk, then run the client's reads until they deliver nothing more."""
    for chunk in chunks:
        peer.sendall(chunk)
        idle = 0
        while idle < 3:  # stock paho handles one packet per call
            before = len(delivered)
            client.loop_read()
            idle = idle + 1 if len(delivered) == before else 0


def deliveries(client: mqtt.Client, chunks: list[bytes]) -> list[Delivered]:
    with wired(client) as (peer, delivered):
        feed(client, peer, chunks, delivered)
        return delivered


def stock() -> mqtt.Client:
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id="stock", clean_session=False)


def portal() -> PortalClient:
    return PortalClient(CallbackAPIVersion.VERSION2, client_id="portal", clean_session=False)


STREAM = b"".join(
    [
        publish(b"office/a/b/c", b"21.5", qos=1, mid=1),
        publish(b"office/a/b/c", b"", qos=0),
        publish(b"office/a/b/d", b"x" * 300, qos=1, mid=2, retain=True),  # two-byte length
        publish(b"office/a/b/e", b"y" * 20_000, qos=1, mid=3, dup=True),  # three-byte length
        publish(b"office/\xff/b/c", b"\x00\x01", qos=1, mid=65535),  # bad UTF-8 topic
        publish(b"alarms/a/b/t", b"{}", qos=1, mid=4),
    ]
)


def test_the_fast_path_delivers_what_paho_delivers() -> None:
    expected = deliveries(stock(), [STREAM])
    assert len(expected) == 6
    assert deliveries(portal(), [STREAM]) == expected


def test_split_packets_are_completed_by_paho() -> None:
    expected = deliveries(stock(), [STREAM])
    one_byte_at_a_time = [STREAM[i : i + 1] for i in range(len(STREAM))][:400]
    rest = STREAM[400:]
    assert deliveries(portal(), [*one_byte_at_a_time, rest]) == expected


@property_test
@given(
    messages=st.lists(
        st.tuples(
            st.binary(min_size=1, max_size=40),
            st.binary(max_size=400),
            st.integers(0, 1),
            st.integers(1, 65535),
            st.booleans(),
        ),
        min_size=1,
        max_size=30,
    ),
    cuts=st.lists(st.integers(1, 500), max_size=20),
)
def test_any_stream_split_anywhere_matches_paho(
    messages: list[tuple[bytes, bytes, int, int, bool]], cuts: list[int]
) -> None:
    stream = b"".join(publish(t, p, qos, mid, retain=r) for t, p, qos, mid, r in messages)
    chunks, position = [], 0
    for cut in cuts:
        chunks.append(stream[position : position + cut])
        position += cut
    chunks.append(stream[position:])
    chunks = [chunk for chunk in chunks if chunk]
    assert deliveries(portal(), chunks) == deliveries(stock(), [stream])


def test_other_packets_and_qos2_go_through_paho() -> None:
    buffered = BufferedSocket(None)
    buffered._data = bytes([0x90, 0x03, 0x00, 0x01, 0x01])  # SUBACK
    assert buffered.take_publish() is None
    buffered._data, buffered._pos = publish(b"a/b", b"1", qos=2, mid=5), 0
    assert buffered.take_publish() is None
    buffered._data, buffered._pos = publish(b"", b"1", qos=0), 0  # empty topic: paho's protocol error
    assert buffered.take_publish() is None
    buffered._data, buffered._pos = b"\x30\xff\xff\xff\xff\x7f", 0  # five length bytes: malformed
    assert buffered.take_publish() is None


def test_ack_many_sends_one_puback_per_message_in_one_write() -> None:
    client = portal()
    with wired(client) as (peer, _):
        client.ack_many([1, 258, 65535])
        client.ack_many([])
        client.loop_write()
        assert peer.recv(100) == b"\x40\x02\x00\x01" + b"\x40\x02\x01\x02" + b"\x40\x02\xff\xff"
