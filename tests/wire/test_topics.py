"""Topic parsing: exactly <root>/<room>/<device>/<attr>, hostile topics refused with a reason."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.web.portal_testing import property_test
from wire.names import MAX_NAME_CHARS, is_valid_name, name_problem
from wire.rejections import Reason, Rejection
from wire.topics import Topic, parse_topic


def test_valid_topic_is_split_into_levels() -> None:
    topic = parse_topic(b"office/lab/sensor1/temperature", "office")
    assert topic == Topic("office", "lab", "sensor1", "temperature")
    assert isinstance(topic, Topic)
    assert topic.key == "lab/sensor1/temperature"
    assert str(topic) == "office/lab/sensor1/temperature"


def test_str_topics_are_accepted_too() -> None:
    assert parse_topic("office/a/b/c", "office") == Topic("office", "a", "b", "c")


def test_unicode_and_markup_names_are_kept_verbatim() -> None:
    topic = parse_topic("office/salle été/<script>/température".encode(), "office")
    assert topic == Topic("office", "salle été", "<script>", "température")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"office", Reason.TOPIC_DEPTH),
        (b"office/lab", Reason.TOPIC_DEPTH),
        (b"office/lab/sensor1", Reason.TOPIC_DEPTH),
        (b"office/lab/sensor1/temperature/extra", Reason.TOPIC_DEPTH),
        (b"/office/lab/sensor1/temperature", Reason.TOPIC_DEPTH),
        (b"office/lab/sensor1/temperature/", Reason.TOPIC_DEPTH),
        (b"", Reason.TOPIC_DEPTH),
        (b"office//sensor1/temperature", Reason.TOPIC_LEVEL),
        (b"office/lab//temperature", Reason.TOPIC_LEVEL),
        (b"office/lab/sensor1/", Reason.TOPIC_LEVEL),
        (b"/lab/sensor1/temperature", Reason.TOPIC_LEVEL),
        (b"office/+/sensor1/temperature", Reason.TOPIC_LEVEL),
        (b"office/lab/#/temperature", Reason.TOPIC_LEVEL),
        (b"office/lab/sen+sor/temperature", Reason.TOPIC_LEVEL),
        (b"office/lab/sensor1/temp\x00", Reason.TOPIC_LEVEL),
        (b"office/lab/sensor\x1b[31m/temperature", Reason.TOPIC_LEVEL),
        (b"office/lab/sensor\x7f/temperature", Reason.TOPIC_LEVEL),
        ("office/lab/sensor\u200b1/temperature".encode(), Reason.TOPIC_LEVEL),  # zero-width space
        ("office/lab/\u202egnp.exe/temperature".encode(), Reason.TOPIC_LEVEL),  # right-to-left override
        ("office/\ufefflab/sensor1/temperature".encode(), Reason.TOPIC_LEVEL),  # byte order mark
        ("office/lab/sensor1/temp\u2028".encode(), Reason.TOPIC_LEVEL),  # line separator
        (b"office/ lab/sensor1/temperature", Reason.TOPIC_LEVEL),
        (b"office/lab/sensor1 /temperature", Reason.TOPIC_LEVEL),
        (b"office/lab/" + b"d" * (MAX_NAME_CHARS + 1) + b"/temperature", Reason.TOPIC_LEVEL),
        (b"home/lab/sensor1/temperature", Reason.TOPIC_ROOT),
        (b"Office/lab/sensor1/temperature", Reason.TOPIC_ROOT),
        (b"office/lab/\xff\xfe/temperature", Reason.TOPIC_UTF8),
        (b"office/lab/\xed\xa0\x80/temperature", Reason.TOPIC_UTF8),  # encoded surrogate
    ],
)
def test_hostile_topics_are_rejected_with_a_reason(raw: bytes, reason: Reason) -> None:
    result = parse_topic(raw, "office")
    assert isinstance(result, Rejection)
    assert result.reason is reason


def test_root_is_configurable() -> None:
    assert parse_topic(b"factory/hall/press/state", "factory") == Topic("factory", "hall", "press", "state")
    result = parse_topic(b"office/hall/press/state", "factory")
    assert isinstance(result, Rejection)
    assert result.reason is Reason.TOPIC_ROOT


def test_rejection_detail_never_echoes_the_topic() -> None:
    result = parse_topic(b"office/lab/<script>alert(1)</script>/x", "office")
    assert isinstance(result, Rejection)
    assert "<script>" not in str(result)


_level = st.text(min_size=1, max_size=MAX_NAME_CHARS).filter(is_valid_name)


@property_test
@given(room=_level, device=_level, attr=_level)
def test_any_valid_levels_round_trip(room: str, device: str, attr: str) -> None:
    raw = f"office/{room}/{device}/{attr}".encode()
    assert parse_topic(raw, "office") == Topic("office", room, device, attr)


@property_test
@given(st.binary(max_size=200))
def test_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    result = parse_topic(raw, "office")
    assert isinstance(result, Topic | Rejection)


def test_repeated_and_very_long_topics_parse_the_same() -> None:
    raw = b"office/lab/sensor1/temperature"
    assert parse_topic(raw, "office") is parse_topic(raw, "office")  # remembered
    assert parse_topic(bytearray(raw), "office") == parse_topic(raw, "office")
    assert parse_topic(raw, "factory") == Rejection(Reason.TOPIC_ROOT, "root is not 'factory'")
    longest = b"office/" + b"r" * MAX_NAME_CHARS + b"/" + b"d" * MAX_NAME_CHARS + b"/t"
    topic = parse_topic(longest, "office")
    assert isinstance(topic, Topic)
    assert len(topic.device) == MAX_NAME_CHARS
    assert parse_topic(longest + b"\x00", "office") == Rejection(
        Reason.TOPIC_LEVEL, "invisible or control character U+0000 in name"
    )
    assert parse_topic(b"office/lab/" + b"d" * 60_000 + b"/t", "office") == Rejection(
        Reason.TOPIC_LEVEL, f"longer than {MAX_NAME_CHARS} characters"
    )


@property_test
@given(st.text(max_size=60))
def test_the_whole_topic_check_agrees_with_the_level_check(level: str) -> None:
    # Readings follow the lab's one rule for names (wire.names), level by level.
    result = parse_topic(f"office/room/{level}/attr", "office")
    problem = None if "/" in level else name_problem(level)
    if "/" in level:
        assert isinstance(result, Rejection)
    elif problem is None:
        assert result == Topic("office", "room", level, "attr")
    else:
        assert result == Rejection(Reason.TOPIC_LEVEL, problem)
