"""MQTT framing on its own (wire.mqtt): the remaining length, strings, a stream split into packets
wherever it was cut, hostile bytes, and the probe's packets as a real broker reads them elsewhere
(tests/lab, tests/web)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire import mqtt


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (2_097_151, b"\xff\xff\x7f"),
        (2_097_152, b"\x80\x80\x80\x01"),
        (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_variable_length_integers_match_the_specification(value: int, encoded: bytes) -> None:
    assert mqtt.varint(value) == encoded
    assert mqtt.remaining(value) == encoded
    assert mqtt.read_varint(b"\x00" + encoded, 1) == (value, 1 + len(encoded))


@pytest.mark.parametrize("value", [-1, 268_435_456])
def test_a_length_outside_four_bytes_is_refused(value: int) -> None:
    with pytest.raises(ValueError, match="variable-length"):
        mqtt.varint(value)


def test_strings_carry_their_length_in_two_bytes() -> None:
    assert mqtt.utf8("dévice") == b"\x00\x07d\xc3\xa9vice"
    assert mqtt.binary(b"") == b"\x00\x00"
    with pytest.raises(ValueError, match="65,535"):
        mqtt.utf8("x" * 65_536)


@given(
    st.lists(
        st.tuples(st.sampled_from([0x30, 0x32, 0x40, 0x90, 0xD0]), st.binary(max_size=20_000)), max_size=8
    )
)
def test_a_stream_cut_anywhere_splits_into_the_packets_written(packets: list[tuple[int, bytes]]) -> None:
    stream = b"".join(mqtt.packet(first, body) for first, body in packets)
    for cut in {0, 1, len(stream) // 3, len(stream) - 1}:
        buffer = bytearray(stream[:cut])
        got = mqtt.split(buffer)
        buffer += stream[cut:]
        got += mqtt.split(buffer)
        assert got == packets
        assert buffer == b""


def test_frame_says_where_a_whole_packet_is_and_waits_for_the_rest() -> None:
    packet = mqtt.packet(0x30, b"x" * 200)
    assert mqtt.frame(packet, 0, len(packet)) == (3, 203)
    assert mqtt.frame(packet, 0, len(packet) - 1) is None
    assert mqtt.frame(packet[:2], 0, 2) is None


@pytest.mark.parametrize("reader", ["split", "frame", "read_varint"])
def test_a_length_of_five_bytes_is_refused_by_every_reader(reader: str) -> None:
    hostile = b"\x30\xff\xff\xff\xff\x01" + b"x" * 10
    with pytest.raises(mqtt.ProtocolError, match="four bytes"):
        if reader == "split":
            mqtt.split(bytearray(hostile))
        elif reader == "frame":
            mqtt.frame(hostile, 0, len(hostile))
        else:
            mqtt.read_varint(hostile, 1)


def test_a_packet_over_the_limit_is_refused_before_it_is_read() -> None:
    with pytest.raises(mqtt.ProtocolError, match="over the limit"):
        mqtt.split(bytearray(b"\x30\x80\x80\x01"), max_packet=1000)


def test_the_probe_packets() -> None:
    assert mqtt.subscribe_packet("a/#") == b"\x82\x08\x00\x01\x00\x03a/#\x00"
    publish = mqtt.publish_packet(b"t", b"v", qos=1, packet_id=7, retain=True)
    assert publish == b"\x33\x06\x00\x01t\x00\x07v"
    [(first, body)] = mqtt.split(bytearray(publish))
    assert mqtt.publish_payload(first, body) == b"v"
    connect = mqtt.connect_packet("c", "u", "p")
    assert connect[0] == 0x10 and mqtt.frame(connect, 0, len(connect)) == (2, len(connect))
