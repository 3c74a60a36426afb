"""Payload parsing: one value per message; hostile payloads refused with a reason, never raised."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.web.portal_testing import property_test
from wire.payloads import MAX_PAYLOAD_BYTES, Payload, parse_payload
from wire.rejections import Reason, Rejection


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"21.5", 21.5),
        (b"-3", -3.0),
        (b"0", 0.0),
        (b"1e3", 1000.0),
        (b"-2.5E-3", -0.0025),
        (b" 21.5\n", 21.5),
        (b"true", 1.0),
        (b"false", 0.0),
        (b'"open"', "open"),
        (b'""', ""),
        (b'"two words"', "two words"),
        ('"température"'.encode(), "température"),
        (b'"line\\nbreak\\ttab"', "line\nbreak\ttab"),
        (b'"<script>alert(1)</script>"', "<script>alert(1)</script>"),
        (b"1.7976931348623157e308", 1.7976931348623157e308),
        (b"123456789012345678901234567890", 1.2345678901234568e29),
        # plain text that is not JSON
        (b"+21.5", 21.5),
        (b".5", 0.5),
        (b"5.", 5.0),
        (b"on", "on"),
        (b"OPEN", "OPEN"),
        (b"True", "True"),
        ("été".encode(), "été"),
        (b"open\r\n", "open"),
    ],
)
def test_accepted_values(raw: bytes, value: float | str) -> None:
    assert parse_payload(raw) == Payload(value)


def test_numbers_are_floats_and_booleans_are_one_and_zero() -> None:
    result = parse_payload(b"21")
    assert isinstance(result, Payload)
    assert type(result.value) is float
    assert parse_payload(b"true") == Payload(1.0)


def test_object_with_value_and_ts() -> None:
    result = parse_payload(b'{"value": 1, "ts": 1700000000000}')
    assert result == Payload(1.0, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC))


@pytest.mark.parametrize("unit", ["°C", "%", "kWh", "µg/m³", "m/s²", "sixteen chars!!!"])
def test_object_may_name_its_unit(unit: str) -> None:
    parsed = parse_payload(json.dumps({"value": 21.5, "unit": unit}).encode())
    assert parsed == Payload(21.5, None, unit)


def test_object_ts_keeps_milliseconds_exactly() -> None:
    result = parse_payload(b'{"ts": 1700000000123, "value": "x"}')
    assert isinstance(result, Payload)
    assert result.ts == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)


def test_object_ts_may_be_fractional_and_is_optional() -> None:
    result = parse_payload(b'{"value": 2.5, "ts": 1700000000000.5}')
    assert isinstance(result, Payload)
    assert result.ts == datetime(2023, 11, 14, 22, 13, 20, 500, tzinfo=UTC)
    assert parse_payload(b'{"value": true}') == Payload(1.0, None)
    assert parse_payload(b'{"value": "on"}') == Payload("on", None)


def test_ts_bounds() -> None:
    assert parse_payload(b'{"value": 1, "ts": 0}') == Payload(1.0, datetime(1970, 1, 1, tzinfo=UTC))
    result = parse_payload(b'{"value": 1, "ts": 253402300799999}')
    assert isinstance(result, Payload)
    assert result.ts is not None
    assert result.ts.year == 9999


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", Reason.EMPTY),
        (b"   \n\t", Reason.EMPTY),
        (b"\xff\xfe\xfd", Reason.BAD_UTF8),
        (b"\xc3(", Reason.BAD_UTF8),
        (b"\xed\xa0\x80", Reason.BAD_UTF8),  # a surrogate, UTF-8 encoded
        (b"\x00\x01\x02\x03", Reason.BINARY),
        (b"21.5\x00", Reason.BINARY),
        (b"\x89PNG\r\n\x1a\n", Reason.BINARY),
        (b"\x1b[31mred", Reason.BINARY),
        (b"NaN", Reason.NOT_FINITE),
        (b"Infinity", Reason.NOT_FINITE),
        (b"-Infinity", Reason.NOT_FINITE),
        (b"nan", Reason.NOT_FINITE),
        (b"inf", Reason.NOT_FINITE),
        (b"-inf", Reason.NOT_FINITE),
        (b'{"value": NaN}', Reason.NOT_FINITE),
        (b'{"value": 1, "ts": Infinity}', Reason.NOT_FINITE),
        (b"1e400", Reason.OUT_OF_RANGE),
        (b"-1e400", Reason.OUT_OF_RANGE),
        (b"1" + b"0" * 400, Reason.OUT_OF_RANGE),
        (b"9" * 5000, Reason.OUT_OF_RANGE),
        (b"1" * 400 + b".", Reason.OUT_OF_RANGE),
        (b'{"value": 1e999}', Reason.OUT_OF_RANGE),
        (b"null", Reason.NULL),
        (b'{"value": null}', Reason.NULL),
        (b"[1, 2]", Reason.NESTED),
        (b"[]", Reason.NESTED),
        (b'{"value": [1]}', Reason.NESTED),
        (b'{"value": {"value": 1}}', Reason.NESTED),
        (b"[" * 100_000, Reason.OVERSIZE),
        (b"[" * 60_000, Reason.NESTED),
        (b"[" * 30_000 + b"]" * 30_000, Reason.NESTED),
        (b'{"value":' * 3_000 + b"1" + b"}" * 3_000, Reason.NESTED),
        (b"{}", Reason.MISSING_VALUE),
        (b'{"ts": 1700000000000}', Reason.MISSING_VALUE),
        (b'{"val": 1}', Reason.UNKNOWN_KEY),
        (b'{"value": 1, "units": "C"}', Reason.UNKNOWN_KEY),
        (b'{"value": 1, "unit": ""}', Reason.BAD_UNIT),
        (b'{"value": 1, "unit": 7}', Reason.BAD_UNIT),
        (b'{"value": 1, "unit": null}', Reason.BAD_UNIT),
        (b'{"value": 1, "unit": ["C"]}', Reason.BAD_UNIT),
        (b'{"value": 1, "unit": " C"}', Reason.BAD_UNIT),
        (b'{"value": 1, "unit": "C\\u0000"}', Reason.BAD_UNIT),
        (b'{"value": 1, "unit": "\\u202eC"}', Reason.BAD_UNIT),
        (b'{"value": 1, "unit": "seventeen chars!!"}', Reason.BAD_UNIT),
        (b'{"value": 1, "value": 2}', Reason.DUPLICATE_KEY),
        (b'{"value": 1, "ts": "1700000000000"}', Reason.BAD_TS),
        (b'{"value": 1, "ts": true}', Reason.BAD_TS),
        (b'{"value": 1, "ts": null}', Reason.BAD_TS),
        (b'{"value": 1, "ts": -1}', Reason.BAD_TS),
        (b'{"value": 1, "ts": 1e30}', Reason.BAD_TS),
        (b'{"value": 1, "ts": 1e400}', Reason.BAD_TS),
        (b'{"value": 1, "ts": [1]}', Reason.BAD_TS),
        (b'"a\\u0000b"', Reason.BAD_STRING),
        (b'"\\ud800"', Reason.BAD_STRING),
        (b'{"value": "\\udfff"}', Reason.BAD_STRING),
        (b'"bell\\u0007"', Reason.BAD_STRING),
        ("x\u009by".encode(), Reason.BAD_STRING),  # a C1 control, valid UTF-8
        (b'"next\\u0085line"', Reason.BAD_STRING),
        (b"{bad json", Reason.MALFORMED),
        (b'{"value": 1', Reason.MALFORMED),
        (b'"unterminated', Reason.MALFORMED),
        (b"[1,", Reason.MALFORMED),
        (b"two words", Reason.MALFORMED),
        (b"21.5 C", Reason.MALFORMED),
        (b"21.5\n22.5", Reason.MALFORMED),
    ],
)
def test_rejected_payloads(raw: bytes, reason: Reason) -> None:
    result = parse_payload(raw)
    assert isinstance(result, Rejection), result
    assert result.reason is reason


def test_oversize_limit_is_exact() -> None:
    at_limit = b'"' + b"a" * (MAX_PAYLOAD_BYTES - 2) + b'"'
    assert isinstance(parse_payload(at_limit), Payload)
    result = parse_payload(at_limit + b" ")
    assert isinstance(result, Rejection)
    assert result.reason is Reason.OVERSIZE


def test_long_non_number_text_is_parsed_quickly() -> None:
    # A number-like prefix must not make the plain-number pattern backtrack quadratically.
    result = parse_payload(b"1" * 4000 + b"x" + b" y")
    assert isinstance(result, Rejection)
    assert result.reason is Reason.MALFORMED


def test_payload_views_are_accepted() -> None:
    assert parse_payload(bytearray(b"1")) == Payload(1.0)
    assert parse_payload(memoryview(b"1")) == Payload(1.0)


@property_test
@given(st.binary(max_size=300))
def test_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    assert isinstance(parse_payload(raw), Payload | Rejection)


@property_test
@given(st.text(max_size=200))
def test_never_raises_on_arbitrary_text(text: str) -> None:
    assert isinstance(parse_payload(text.encode("utf-8", "surrogatepass")), Payload | Rejection)


_json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@property_test
@given(_json)
def test_never_raises_on_arbitrary_json(document: object) -> None:
    assert isinstance(parse_payload(json.dumps(document).encode()), Payload | Rejection)


@property_test
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_finite_floats_round_trip(number: float) -> None:
    assert parse_payload(json.dumps(number).encode()) == Payload(number)
    wrapped = parse_payload(json.dumps({"value": number}).encode())
    assert isinstance(wrapped, Payload)
    assert isinstance(wrapped.value, float)
    assert math.isclose(wrapped.value, number) or wrapped.value == number


@property_test
@given(st.text(max_size=50).filter(lambda s: all(c.isprintable() or c in "\t\n\r" for c in s)))
def test_printable_json_strings_round_trip(text: str) -> None:
    assert parse_payload(json.dumps(text).encode()) == Payload(text)


@property_test
@given(
    st.from_regex(rb"\A[+-]?(?:\d{1,400}(?:\.\d{0,20})?|\.\d{1,20})(?:[eE][+-]?\d{1,4})?\Z", fullmatch=True)
)
def test_the_plain_number_fast_path_agrees_with_the_text_path(raw: bytes) -> None:
    assert_same_outcome(raw)


@pytest.mark.parametrize("raw", [b"1" * 400, b"1" * 5000, b"-" + b"9" * 320, b"1e400", b"0.0", b"-0", b"007"])
def test_the_plain_number_fast_path_agrees_on_edge_cases(raw: bytes) -> None:
    assert_same_outcome(raw)


def assert_same_outcome(raw: bytes) -> None:
    """A bare number skips decoding; with a trailing space it takes the JSON/plain-text path."""
    fast, slow = parse_payload(raw), parse_payload(raw + b" ")
    if isinstance(fast, Rejection) and isinstance(slow, Rejection):
        assert fast.reason == slow.reason  # the details may word it differently
    else:
        assert fast == slow


def test_unicode_digits_are_not_fast_numbers() -> None:
    assert parse_payload("\u0663".encode()) == parse_payload("\u0663 ".encode())
