"""Telemetry payloads: topic and payload templates, and the encoders that fill them fast.

A target describes its messages with :class:`Template` (``{placeholders}`` checked once); each
device gets an :class:`Encoder`, ``encode(values, seq, epoch_ms) -> payloads``, called at every
instant of every device, so the encoders format with ``%`` on bytes, keep the text of recent
floats, and share one object among devices whose payloads differ only in their values.
"""

from __future__ import annotations

import functools
import json
import math
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter

from stress.behaviours import Value
from stress.errors import ScenarioError

#: Placeholders fixed per device (filled once) and per message (filled at each publish).
STATIC_FIELDS = ("root", "room", "device", "attr")
DYNAMIC_FIELDS = ("value", "seq", "ts", "values")

Encoder = Callable[[Sequence[Value], int, float], list[bytes]]


#: Text of the finite floats written lately: a sensor's readings repeat, and ``repr`` is slow.
_FLOAT_TEXT: dict[float, bytes] = {}
_FLOAT_TEXT_MAX = 1 << 16


def literal(value: Value) -> bytes:
    """A value as JSON text: numbers plain, booleans ``true``/``false``, strings quoted."""
    kind = type(value)
    if kind is float:
        text = _FLOAT_TEXT.get(value)  # type: ignore[arg-type]
        if text is None:
            if not math.isfinite(value):  # type: ignore[arg-type]
                return b"null"
            text = repr(value).encode()
            if value:  # 0.0 and -0.0 are equal keys but different text: never kept
                if len(_FLOAT_TEXT) >= _FLOAT_TEXT_MAX:
                    _FLOAT_TEXT.clear()
                _FLOAT_TEXT[value] = text  # type: ignore[index]
        return text
    if kind is int:
        return str(value).encode()
    if kind is bool:
        return b"true" if value else b"false"
    return json.dumps(value).encode()


@functools.lru_cache(maxsize=1)
def stamp(epoch_ms: float) -> bytes:
    """``{ts}`` as text; every message of one engine tick has the same, so it is formatted once."""
    return b"%.3f" % epoch_ms


@functools.lru_cache(maxsize=1)
def stamp_ms(epoch_ms: float) -> bytes:
    """``{ts}`` in whole milliseconds (ThingsBoard reads a timestamp as a long integer)."""
    return b"%d" % epoch_ms


@dataclass(frozen=True)
class Template:
    """A topic or payload template with ``{placeholders}``, checked once."""

    text: str
    fields: tuple[str, ...]

    @classmethod
    def parse(cls, text: str, allowed: Sequence[str], what: str) -> Template:
        """Parse ``text``; an unknown placeholder or a format spec is a :class:`ScenarioError`."""
        fields: list[str] = []
        try:
            parts = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise ScenarioError(f"{what} {text!r}: {exc} (write {{{{ and }}}} for literal braces)") from None
        for _literal, name, spec, conversion in parts:
            if name is None:
                continue
            if name not in allowed or spec or conversion:
                raise ScenarioError(
                    f"{what} {text!r}: unknown placeholder {{{name}}}; "
                    f"use {', '.join('{' + a + '}' for a in allowed)}"
                )
            fields.append(name)
        return cls(text, tuple(fields))

    @functools.cached_property
    def _slots(self) -> tuple[tuple[str, str | None], ...]:
        """The template once parsed: (literal text with ``%`` doubled, the placeholder after it)."""
        return tuple(
            (literal_text.replace("%", "%%"), name)
            for literal_text, name, _spec, _conversion in string.Formatter().parse(self.text)
        )

    def fill(self, values: Mapping[str, str]) -> str:
        """Fill the static placeholders; dynamic ones stay as ``%b`` slots (literal ``%`` doubled)."""
        out: list[str] = []
        for literal_text, name in self._slots:
            out.append(literal_text)
            if name is not None:
                out.append("%b" if name in DYNAMIC_FIELDS else values[name].replace("%", "%%"))
        return "".join(out)

    def pattern(self) -> re.Pattern[bytes]:
        """A regular expression matching rendered payloads, ``ts`` captured."""
        out: list[str] = []
        for literal_text, name, _spec, _conversion in string.Formatter().parse(self.text):
            out.append(re.escape(literal_text))
            if name is not None:
                out.append(
                    "(?P<ts>-?[0-9.eE+]+)" if name == "ts" and "(?P<ts>" not in "".join(out) else ".*?"
                )
        return re.compile("".join(out).encode(), re.DOTALL)


def _picker(names: Sequence[str], order: Sequence[str]) -> Callable[[tuple[bytes, ...]], tuple[bytes, ...]]:
    """A function picking ``names`` (in template order) out of a tuple laid out as ``order``."""
    indexes = [order.index(name) for name in names]
    if not indexes:
        return lambda _args: ()
    if len(indexes) == 1:
        only = indexes[0]
        return lambda args: (args[only],)
    return itemgetter(*indexes)


class AttributeEncoder:
    """One message per attribute: ``{value}``, ``{seq}`` and ``{ts}`` filled per message.

    Its :class:`Encoder` is the bound ``encode`` (a bound method is much cheaper to call than
    an object's ``__call__``, and it is called at every instant of every device).
    """

    ORDER = ("value", "seq", "ts")

    def __init__(self, formats: Sequence[str], fields: Sequence[str]) -> None:
        self.formats = [text.encode() for text in formats]
        self.size = len(self.formats)
        names = [name for name in fields if name in self.ORDER]
        self.pick = _picker(names, self.ORDER)
        self.uses_seq = "seq" in names
        self.uses_ts = "ts" in names
        #: Every payload is its value alone (``--payload '{value}'``): no formatting at all.
        self.bare = names == ["value"] and all(fmt == b"%b" for fmt in self.formats)

    def encode(self, values: Sequence[Value], seq: int, epoch_ms: float) -> list[bytes]:
        if self.bare:
            if len(values) != self.size:
                raise ValueError(f"{len(values)} values for {self.size} attributes")
            # literal(), inlined for the floats it has written before (a lookup then, no call)
            payloads = []
            known = _FLOAT_TEXT.get
            for value in values:
                text = known(value)  # type: ignore[arg-type]
                if text is None or type(value) is not float:
                    text = literal(value)
                payloads.append(text)
            return payloads
        seq_b = b"%d" % seq if self.uses_seq else b""
        ts_b = stamp(epoch_ms) if self.uses_ts else b""
        pick = self.pick
        return [
            fmt % pick((literal(value), seq_b, ts_b)) for fmt, value in zip(self.formats, values, strict=True)
        ]


class SampleEncoder:
    """One message per sample: ``{values}`` (a JSON object of all attributes), ``{seq}``, ``{ts}``.

    Its :class:`Encoder` is the bound ``encode``.
    """

    ORDER = ("values", "seq", "ts")

    def __init__(
        self, fmt: str, fields: Sequence[str], attributes: Sequence[str], *, whole_ms: bool = False
    ) -> None:
        self.format = fmt.encode()
        self.stamp = stamp_ms if whole_ms else stamp
        names = [name for name in fields if name in self.ORDER]
        self.pick = _picker(names, self.ORDER)
        self.uses_seq = "seq" in names
        self.uses_ts = "ts" in names
        self.keys = [json.dumps(name).encode() + b":" for name in attributes]

    def encode(self, values: Sequence[Value], seq: int, epoch_ms: float) -> list[bytes]:
        body = (
            b"{"
            + b",".join(key + literal(value) for key, value in zip(self.keys, values, strict=True))
            + b"}"
        )
        seq_b = b"%d" % seq if self.uses_seq else b""
        ts_b = self.stamp(epoch_ms) if self.uses_ts else b""
        return [self.format % self.pick((body, seq_b, ts_b))]
