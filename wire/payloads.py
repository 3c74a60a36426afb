"""Telemetry payloads: one value per message.

Accepted, checked in this order:

* a JSON number, boolean or string: ``21.5``, ``true``, ``"open"``;
* a JSON object ``{"value": v, "ts": epoch_ms, "unit": "°C"}`` where ``v`` is one of the above,
  ``ts`` (optional) is a number of milliseconds since 1970-01-01 UTC and ``unit`` (optional) the
  unit of measure, 1 to :data:`MAX_UNIT_CHARS` printable characters;
* plain text that is a number (``+21.5``, ``.5``, ``1e3``) or a single word (``on``, ``OPEN``).

How values are stored: numbers become double precision floats and **booleans become the numbers
1.0 and 0.0** (so averages of on/off states are duty cycles); strings stay strings. The storage
columns are ``value_num`` and ``value_text``; exactly one is set.

Everything else is refused with a :class:`~wire.rejections.Rejection`; this module never raises on
any input and does no I/O.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from wire.rejections import Reason, Rejection
from wire.timestamps import MAX_TS_MS, to_datetime

#: Largest accepted payload, in bytes. Bigger ones are refused before any decoding.
MAX_PAYLOAD_BYTES = 64 * 1024
#: Keys a JSON object payload may carry.
OBJECT_KEYS = frozenset({"value", "ts", "unit"})
#: Longest unit of measure (``°C``, ``kWh``, ``µg/m³``...).
MAX_UNIT_CHARS = 16

# C0 controls except tab, LF and CR, plus DEL: bytes that do not occur in text. None of these
# bytes can appear inside a multi-byte UTF-8 sequence, so testing the raw bytes is exact.
_BINARY_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Unambiguous on purpose (no two adjacent \d runs), so a long non-number never backtracks.
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_PLAIN_NUMBER_BYTES = re.compile(_PLAIN_NUMBER.pattern.encode())  # ASCII digits only, on raw bytes
# In decoded strings: C0 controls but tab, LF and CR; DEL and the C1 controls; lone surrogates
# (which JSON escapes like "\ud800" can produce and which cannot be encoded back to UTF-8).
_BAD_TEXT_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_NON_FINITE_WORDS = frozenset({"nan", "inf", "infinity"})


@dataclass(frozen=True, slots=True)
class Payload:
    """A valid payload: the value and, when the device sent one, its own timestamp (UTC)."""

    value: float | str
    ts: datetime | None = None
    unit: str | None = None


class _Refused(Exception):  # noqa: N818 - internal control flow, never escapes this module
    """Raised by the checks below (and the JSON parser's hooks) to refuse with a reason."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.rejection = Rejection(reason, detail)


def _refuse_constant(name: str) -> Any:
    raise _Refused(Reason.NOT_FINITE, f"{name} is not a finite number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(Reason.DUPLICATE_KEY, "a key appears twice")
        result[key] = value
    return result


# One decoder for every payload: json.loads() with hooks builds a new decoder per call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)


def parse_payload(raw: bytes | bytearray | memoryview) -> Payload | Rejection:
    """Parse one MQTT payload.

    Args:
        raw: the payload bytes exactly as received.

    Returns:
        The :class:`Payload`, or a :class:`Rejection` naming why it cannot be stored.
    """
    try:
        return _parse(bytes(raw))
    except _Refused as refused:
        return refused.rejection


def _parse(data: bytes) -> Payload:
    if not data:
        raise _Refused(Reason.EMPTY, "no bytes")
    if len(data) > MAX_PAYLOAD_BYTES:
        raise _Refused(Reason.OVERSIZE, f"{len(data)} bytes, limit {MAX_PAYLOAD_BYTES}")
    if _PLAIN_NUMBER_BYTES.fullmatch(data):
        # The common case, a bare number, without decoding: same value as the JSON path below.
        return Payload(_scalar(float(data)))
    if _BINARY_BYTES.search(data):
        raise _Refused(Reason.BINARY, "control bytes in payload")
    try:
        text = data.decode("utf-8").strip(" \t\r\n")
    except UnicodeDecodeError as exc:
        raise _Refused(Reason.BAD_UTF8, f"invalid UTF-8 at byte {exc.start}") from None
    if not text:
        raise _Refused(Reason.EMPTY, "only whitespace")
    try:
        document = _DECODER.decode(text)
    except RecursionError:
        raise _Refused(Reason.NESTED, "nested too deeply") from None
    except json.JSONDecodeError:
        return _parse_plain(text)
    except ValueError:
        # Integers with more digits than Python converts (sys.get_int_max_str_digits).
        raise _Refused(Reason.OUT_OF_RANGE, "integer too long") from None
    if isinstance(document, dict):
        return _parse_object(document)
    return Payload(_scalar(document))


def _parse_object(document: dict[str, Any]) -> Payload:
    unknown = document.keys() - OBJECT_KEYS
    if unknown:
        raise _Refused(Reason.UNKNOWN_KEY, f"{len(unknown)} unknown key(s); allowed: ts, unit, value")
    if "value" not in document:
        raise _Refused(Reason.MISSING_VALUE, 'object without "value"')
    value = _scalar(document["value"])
    ts = _timestamp(document["ts"]) if "ts" in document else None
    unit = _unit(document["unit"]) if "unit" in document else None
    return Payload(value, ts, unit)


def _unit(unit: Any) -> str:
    if (
        not isinstance(unit, str)
        or not 1 <= len(unit) <= MAX_UNIT_CHARS
        or not unit.isprintable()
        or unit != unit.strip()
    ):
        raise _Refused(Reason.BAD_UNIT, f"unit must be 1 to {MAX_UNIT_CHARS} printable characters")
    return unit


def _scalar(value: Any) -> float | str:
    """Turn one decoded JSON value into a storable value (see the module docstring)."""
    if value is None:
        raise _Refused(Reason.NULL, "null carries no value")
    if isinstance(value, bool):  # before int: bool is a subclass of int
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            raise _Refused(Reason.OUT_OF_RANGE, "integer too large for a double") from None
        if not math.isfinite(number):  # 1e400 parses to inf
            raise _Refused(Reason.OUT_OF_RANGE, "number too large for a double")
        return number
    if isinstance(value, str):
        return _text(value)
    raise _Refused(Reason.NESTED, f"{type(value).__name__} is not a single value")


def _text(value: str) -> str:
    bad = _BAD_TEXT_CHARS.search(value)
    if bad is None:
        return value
    if unicodedata.category(bad.group()) == "Cs":
        raise _Refused(Reason.BAD_STRING, "lone surrogate in string")
    raise _Refused(Reason.BAD_STRING, "control character in string")


def _timestamp(ts: Any) -> datetime:
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise _Refused(Reason.BAD_TS, "ts must be a number of milliseconds since 1970")
    if not 0 <= ts <= MAX_TS_MS:  # also false for NaN
        raise _Refused(Reason.BAD_TS, "ts outside 1970..9999")
    return to_datetime(ts)


def _parse_plain(text: str) -> Payload:
    """Plain text that is not JSON: a number, or a single word."""
    if _PLAIN_NUMBER.fullmatch(text):
        return Payload(_scalar(float(text)))
    if text.lstrip("+-").lower() in _NON_FINITE_WORDS:
        raise _Refused(Reason.NOT_FINITE, "not a finite number")
    if text[0] in '{["':
        raise _Refused(Reason.MALFORMED, "invalid JSON")
    if any(char.isspace() for char in text):
        raise _Refused(Reason.MALFORMED, "plain text must be one word or number")
    return Payload(_text(text))
