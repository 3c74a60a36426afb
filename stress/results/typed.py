"""JSON to frozen dataclasses and back, by the dataclasses' own annotations.

The run model (:mod:`stress.results.model`) is written by the run and read back by the report
and the dashboard. Reading it is judged here once, for every field, from its annotation: a value
of the wrong type is a :class:`WrongTypeError` naming the key (a figure would otherwise be wrong
without a word); a missing or null key takes the field's default, so older or partial files
still read, and a field renamed since keeps its old keys in its metadata (``was``): a document
that has only an old key is read under the new name. The annotations this understands are the
ones the model uses: ``int``, ``float``, ``str``, ``bool``, ``Any``, a dataclass,
``tuple[X, ...]``, ``dict[str, X]`` and ``X | None``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from stress.errors import StressError

T = TypeVar("T")


class WrongTypeError(StressError):
    """A value of the wrong type; the message names where and which key."""


def read(cls: type[T], data: Mapping[str, Any], where: str, prefix: str = "") -> T:
    """``data`` read as the dataclass ``cls``; keys ``cls`` does not name are ignored.

    Raises:
        WrongTypeError: a value does not fit its field, or a field without a default is missing.
    """
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = field.name
        value = data.get(key)
        for old in field.metadata.get("was", ()) if value is None else ():
            if data.get(old) is not None:
                key, value = old, data[old]
                break
        if value is None:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise WrongTypeError(f"{where}: no {prefix}{field.name}")
            continue
        hint = _hints(cls)[field.name]  # type: ignore[arg-type]
        converted = _value(hint, value, where, f"{prefix}{key}")
        if converted is not None:
            values[field.name] = converted
    return cls(**values)


def to_json(value: Any) -> Any:
    """A dataclass (or what it holds) as JSON-able lists, dicts and scalars, field by field."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: to_json(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _value(kind: Any, value: Any, where: str, key: str) -> Any:
    """``value`` as ``kind``; None for a number that is not finite (shown as absent, like null)."""
    if value is None:
        return None
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        (kind,) = (arg for arg in typing.get_args(kind) if arg is not type(None))
        origin = typing.get_origin(kind)
    if kind is Any:
        return value
    if origin is tuple:
        item = typing.get_args(kind)[0]
        items = _expect(value, list, where, key, f"a list of {_kind_name(item)}")
        return tuple(_value(item, one, where, f"{key}[{n}]") for n, one in enumerate(items))
    if origin is dict:
        item = typing.get_args(kind)[1]
        entries = _expect(value, dict, where, key, "an object")
        pairs = ((str(name), _value(item, one, where, f"{key}.{name}")) for name, one in entries.items())
        return {name: one for name, one in pairs if one is not None}
    if dataclasses.is_dataclass(kind):
        return read(kind, _expect(value, dict, where, key, "an object"), where, f"{key}.")  # type: ignore[arg-type]
    return _scalar(kind, value, where, key)


def _scalar(kind: type, value: Any, where: str, key: str) -> Any:
    if kind is bool:
        return _expect(value, bool, where, key, "true or false")
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is str:
        if isinstance(value, str) or number:
            return str(value)
        raise _wrong(value, where, key, "text")
    if not number:
        raise _wrong(value, where, key, "a number")
    # Python's json module writes NaN and Infinity unless told not to.
    if not math.isfinite(value):
        return None
    if kind is float:
        return float(value)
    if isinstance(value, float) and not value.is_integer():
        raise _wrong(value, where, key, "a whole number")
    return int(value)


def _kind_name(kind: Any) -> str:
    """What a list holds, in words."""
    if kind is str:
        return "text"
    return "objects" if dataclasses.is_dataclass(kind) else "numbers"


def _expect(value: Any, kind: type, where: str, key: str, expected: str) -> Any:
    if not isinstance(value, kind):
        raise _wrong(value, where, key, expected)
    return value


def _wrong(value: Any, where: str, key: str, expected: str) -> WrongTypeError:
    return WrongTypeError(f"{where}: {key} should be {expected}, got {quoted(value)}")


def quoted(value: Any, limit: int = 40) -> str:
    """A value as a message shows it: its ``repr``, clipped to ``limit`` characters."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"
