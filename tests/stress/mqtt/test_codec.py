"""The packet codec on its own: encodings, the stream splitter, and hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stress.mqtt import codec
from stress.mqtt.codec import MQTT5, MQTT311, Property
from wire.mqtt import ProtocolError, utf8


@pytest.mark.parametrize("version", [MQTT311, MQTT5])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_a_publish_parses_back_to_what_was_encoded(version: int, qos: int) -> None:
    topic = codec.TopicCode("office/r1/dévice/temperature", version)
    payload = b"x" * 300  # a two-byte remaining length
    packet = topic.publish(payload, qos, 4242 if qos else 0)
    [(first, body)] = codec.PacketReader().feed(packet)
    message = codec.parse_publish(first, body, version)
    assert (message.topic, message.payload, message.qos) == ("office/r1/dévice/temperature", payload, qos)
    assert message.packet_id == (4242 if qos else 0)
    assert not message.retain


@pytest.mark.parametrize("topic", ["", "a/+/b", "a/#"])
def test_a_topic_to_publish_to_must_be_concrete(topic: str) -> None:
    with pytest.raises(ValueError, match="topic"):
        codec.TopicCode(topic)


def test_the_reader_joins_packets_split_anywhere() -> None:
    stream = b"".join(codec.TopicCode(f"t/{n}").publish(b"v" * n, 1, n + 1) for n in range(200))
    reader = codec.PacketReader()
    parsed = [packet for byte in stream for packet in reader.feed(bytes([byte]))]
    assert [codec.parse_publish(first, body, MQTT311).packet_id for first, body in parsed] == list(
        range(1, 201)
    )


def test_the_reader_refuses_a_five_byte_length_and_oversize_packets() -> None:
    with pytest.raises(ProtocolError, match="four bytes"):
        codec.PacketReader().feed(b"\x30\xff\xff\xff\xff\x01")
    with pytest.raises(ProtocolError, match="over the limit"):
        codec.PacketReader(max_packet=10).feed(b"\x30\x0b")


def test_properties_round_trip_with_every_kind() -> None:
    properties = {
        Property.PAYLOAD_FORMAT: 1,
        Property.RECEIVE_MAXIMUM: 20,
        Property.SESSION_EXPIRY: 3600,
        Property.SUBSCRIPTION_ID: 200_000,
        Property.REASON_STRING: "ça va",
        Property.CORRELATION_DATA: b"\x00\xff",
        Property.USER_PROPERTY: ("k", "v"),
    }
    block = codec.encode_properties(properties)
    parsed, end = codec.read_properties(block + b"tail", 0)
    assert end == len(block)
    assert parsed[Property.USER_PROPERTY] == [("k", "v")]
    assert {key: parsed[key] for key in properties if key != Property.USER_PROPERTY} == {
        key: value for key, value in properties.items() if key != Property.USER_PROPERTY
    }


@pytest.mark.parametrize(
    "block",
    [b"\x05\x21\x00", b"\x02\x7e\x00", b"\x03\x1f\x00\x05", b"\x04\x1f\x00\x02\xff\xfe", b"\x01"],
    ids=["truncated-int", "unknown-id", "truncated-string", "bad-utf8", "length-past-end"],
)
def test_hostile_property_blocks_are_protocol_errors(block: bytes) -> None:
    with pytest.raises(ProtocolError):
        codec.read_properties(block, 0)


def test_connect_carries_credentials_and_mqtt5_properties() -> None:
    options = codec.ConnectOptions("c1", "user", "pa:ss", keepalive=30, version=MQTT5, receive_maximum=7)
    [(first, body)] = codec.PacketReader().feed(codec.connect(options))
    assert first == 0x10
    assert body[:7] == b"\x00\x04MQTT\x05"
    assert body[7] == 0xC2  # user name, password, clean start
    properties, offset = codec.read_properties(body, 10)
    assert properties == {Property.RECEIVE_MAXIMUM: 7}
    assert body[offset:] == utf8("c1") + utf8("user") + utf8("pa:ss")


def test_an_mqtt5_puback_with_a_reason_is_read() -> None:
    assert codec.parse_ack(b"\x01\x02\x87", MQTT5) == (258, 0x87)
    assert codec.parse_ack(b"\x01\x02", MQTT5) == (258, 0)


@given(st.binary(max_size=200), st.sampled_from([MQTT311, MQTT5]))
def test_random_bytes_give_protocol_errors_or_packets_never_crashes(data: bytes, version: int) -> None:
    try:
        for first, body in codec.PacketReader().feed(data):
            kind = first >> 4
            if kind == codec.PacketType.PUBLISH:
                codec.parse_publish(first, body, version)
            elif kind == codec.PacketType.CONNACK:
                codec.parse_connack(body, version)
            elif kind == codec.PacketType.SUBACK:
                codec.parse_suback(body, version)
            elif kind == codec.PacketType.DISCONNECT:
                codec.parse_disconnect(body, version)
    except ProtocolError:
        pass


# ---------------------------------------------------------------------------- the hot paths

TOPICS = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0xD7FF, blacklist_characters="+#"),
    min_size=1,
    max_size=40,
).map(lambda text: text + "%")  # a '%' in every topic: the sample's template must escape it
PAYLOADS = st.binary(max_size=300) | st.sampled_from([b"x" * 127, b"x" * 128, b"x" * 16_383, b"%b%%"])


@given(
    topics=st.lists(TOPICS, min_size=1, max_size=4), data=st.data(), version=st.sampled_from([MQTT311, MQTT5])
)
def test_a_sample_is_the_publishes_of_its_topics_back_to_back(
    topics: list[str], data: st.DataObject, version: int
) -> None:
    codes = [codec.TopicCode(topic, version) for topic in topics]
    sample = codec.SampleCode(codes)
    for _ in range(3):  # the templates it keeps give the same bytes again
        payloads = data.draw(st.lists(PAYLOADS, min_size=len(codes), max_size=len(codes)))
        assert sample.publish(payloads) == b"".join(
            code.publish(p) for code, p in zip(codes, payloads, strict=True)
        )


@given(
    topic=TOPICS,
    payload=PAYLOADS,
    packet_id=st.integers(0, 65_535),
    version=st.sampled_from([MQTT311, MQTT5]),
)
def test_append_gives_the_bytes_of_publish(topic: str, payload: bytes, packet_id: int, version: int) -> None:
    code = codec.TopicCode(topic, version)
    for _ in range(2):  # the second time from its kept header
        pieces: list[bytes] = []
        code.append(pieces, payload, packet_id)
        assert b"".join(pieces) == code.publish(payload, 1 if packet_id else 0, packet_id)


@given(
    topic=TOPICS,
    payload=PAYLOADS,
    packet_id=st.integers(1, 65_535),
    version=st.sampled_from([MQTT311, MQTT5]),
)
def test_append_qos2_gives_the_bytes_of_publish_and_keeps_its_headers_apart(
    topic: str, payload: bytes, packet_id: int, version: int
) -> None:
    code = codec.TopicCode(topic, version)
    for _ in range(2):  # the second time from its kept header, which QoS 0 and 1 never take
        pieces: list[bytes] = []
        code.append_qos2(pieces, payload, packet_id)
        assert b"".join(pieces) == code.publish(payload, 2, packet_id)
        assert b"".join(pieces)[0] == 0x34
        one: list[bytes] = []
        code.append(one, payload, packet_id)
        assert b"".join(one) == code.publish(payload, 1, packet_id)
        assert code.header(len(payload)) == code.publish(payload)[: len(code.header(len(payload)))]


def test_the_qos2_answers_are_the_packets_of_the_standard() -> None:
    assert codec.pubrec(0x1234) == b"\x50\x02\x12\x34"
    assert codec.pubrel(0x1234) == b"\x62\x02\x12\x34"  # PUBREL's flags are 0010
    assert codec.pubcomp(7) == b"\x70\x02\x00\x07"
    inbound = codec.Publish("t", b"", 2, 9, retain=False, dup=False)
    assert codec.receipt(inbound) == codec.pubrec(9)
    assert codec.receipt(codec.Publish("t", b"", 1, 9, retain=False, dup=False)) == codec.puback(9)
    assert codec.receipt(codec.Publish("t", b"", 0, 0, retain=False, dup=False)) == b""


def test_a_sample_parses_back_into_its_messages() -> None:
    codes = [codec.TopicCode(f"office/room-1/dev%/{attr}") for attr in ("temperature", "humidity")]
    reader = codec.PacketReader()
    packets = reader.feed(codec.SampleCode(codes).publish([b"21.5", b"x" * 200]))
    parsed = [codec.parse_publish(first, body, MQTT311) for first, body in packets]
    assert [(p.topic, p.payload) for p in parsed] == [
        ("office/room-1/dev%/temperature", b"21.5"),
        ("office/room-1/dev%/humidity", b"x" * 200),
    ]
