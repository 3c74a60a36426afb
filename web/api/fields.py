"""What the API's requests may hold, declared once: each field reads itself from a query string (or
a JSON body) and describes itself in the OpenAPI document.

A route declares its query as a :class:`Query` of fields (``Query(Name("room", "only this room"),
Integer("limit", ...))``), reads it with :meth:`Query.read` (a wrong value is a
:class:`~web.api.params.ParamError`, which the API answers 400 with the message), and the OpenAPI
document lists :meth:`Query.parameters` (or, for a JSON body, :meth:`Query.body_schema`): the bounds,
defaults and choices a client reads are the ones the route checks.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from web.api.params import MAX_CURSOR_CHARS, ParamError
from wire.names import MAX_NAME_CHARS, name_problem
from wire.timestamps import MAX_TS_MS

#: A name, as the OpenAPI document describes it.
NAME_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_NAME_CHARS,
    "pattern": "^[^/+#]+$",
    "description": "a name: no '/', '+' or '#', no control or invisible characters, no space at either end",
}
#: A time, as the OpenAPI document describes it.
MS_SCHEMA: dict[str, Any] = {
    "type": "integer",
    "minimum": 0,
    "maximum": MAX_TS_MS,
    "description": "ms since 1970 UTC",
}


@dataclass(frozen=True)
class Field(ABC):
    """One parameter: its key, what it means, whether it must be there."""

    key: str
    description: str
    required: bool = False

    def read(self, source: Mapping[str, Any]) -> Any:
        """The value in ``source`` (a query string's first value, or a JSON body's), checked; the
        default when absent. Raises :class:`ParamError` naming the key."""
        raw = source.get(self.key)
        if raw is None:
            if not self.required:
                return self.absent()
            if self.key not in source:
                raise ParamError(f"{self.key} is required")
        return self.check(raw)  # (a required field sent as null is judged as a wrong value)

    def absent(self) -> Any:
        """The value when the request does not name it."""
        return None

    @abstractmethod
    def check(self, raw: object) -> Any:
        """The value of what the request sent."""

    @abstractmethod
    def schema(self) -> dict[str, Any]:
        """The JSON schema of the value."""

    def body_schema(self) -> dict[str, Any]:
        """The JSON schema of the value in a JSON body (the same as in a query string, unless the
        field says otherwise)."""
        return self.schema()

    def parameter(self, where: str = "query") -> dict[str, Any]:
        """The OpenAPI description of this field as a parameter ``where`` (query or path; a path's
        parameters are always required)."""
        return {
            "name": self.key,
            "in": where,
            "required": self.required or where == "path",
            "schema": self.schema(),
            "description": self.description,
        }


@dataclass(frozen=True)
class Name(Field):
    """A room, device or attribute name, by the lab's one rule for names (:mod:`wire.names`)."""

    def check(self, raw: object) -> str:
        if not isinstance(raw, str):
            raise ParamError(f"{self.key} must be a name (text)")
        problem = name_problem(raw)
        if problem is not None:
            raise ParamError(f"{self.key} is not a valid name: {problem}")
        return raw

    def schema(self) -> dict[str, Any]:
        return dict(NAME_SCHEMA)


@dataclass(frozen=True)
class Prefix(Field):
    """The start of a name: what a name may hold, but possibly ending in a space."""

    def check(self, raw: object) -> str:
        if not isinstance(raw, str):
            raise ParamError(f"{self.key} must be text")
        problem = name_problem(raw.rstrip() or "x")
        if problem is not None:
            raise ParamError(f"{self.key} cannot begin a valid name: {problem}")
        return raw

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS}


@dataclass(frozen=True)
class Text(Field):
    """Free text to search for: at most ``max_length`` printable characters."""

    max_length: int = 100

    def check(self, raw: object) -> str:
        if not isinstance(raw, str) or len(raw) > self.max_length or not raw.isprintable():
            raise ParamError(f"{self.key} must be at most {self.max_length} printable characters")
        return raw

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "maxLength": self.max_length}


@dataclass(frozen=True)
class Integer(Field):
    """A whole number within [minimum, maximum]; ``default`` when absent (None: no default)."""

    minimum: int = 0
    maximum: int = 2**63 - 1
    default: int | None = None

    def absent(self) -> int | None:
        return self.default

    def check(self, raw: object) -> int:
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise ParamError(f"{self.key} must be a whole number")
        text = raw.strip() if isinstance(raw, str) else str(raw)
        if not (text.isascii() and text.lstrip("-").isdigit()) or len(text) > 20:
            raise ParamError(f"{self.key} must be a whole number")
        value = int(text)
        if not self.minimum <= value <= self.maximum:
            raise ParamError(f"{self.key} must be between {self.minimum} and {self.maximum}")
        return value

    def schema(self) -> dict[str, Any]:
        found: dict[str, Any] = {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}
        if self.default is not None:
            found["default"] = self.default
        return found


@dataclass(frozen=True)
class Timestamp(Integer):
    """A time: milliseconds since 1970 (UTC), up to the end of the year 9999."""

    minimum: int = 0
    maximum: int = MAX_TS_MS

    def schema(self) -> dict[str, Any]:
        return dict(MS_SCHEMA)


@dataclass(frozen=True)
class Choice(Field):
    """One of ``options``; ``default`` when absent."""

    options: tuple[str, ...] = ()
    default: str | None = None

    def absent(self) -> str | None:
        return self.default

    def check(self, raw: object) -> str:
        if raw not in self.options:
            raise ParamError(f"{self.key} must be one of {', '.join(self.options)}")
        return str(raw)

    def schema(self) -> dict[str, Any]:
        found: dict[str, Any] = {"type": "string", "enum": list(self.options)}
        if self.default is not None:
            found["default"] = self.default
        return found


@dataclass(frozen=True)
class Flag(Field):
    """``true`` or ``false`` (in a JSON body, a boolean)."""

    def check(self, raw: object) -> bool:
        if isinstance(raw, bool):
            return raw
        if raw in ("true", "false"):
            return raw == "true"
        raise ParamError(f"{self.key} must be true or false")

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": ["true", "false"]}

    def body_schema(self) -> dict[str, Any]:
        """In a JSON body, a boolean."""
        return {"type": "boolean"}


@dataclass(frozen=True)
class Names(Field):
    """One name or several: separated by commas in a query string, a list in a JSON body; each a
    valid name, and one of ``allowed`` when it is given."""

    allowed: tuple[str, ...] | None = None
    most: int = 50

    def check(self, raw: object) -> frozenset[str]:
        if isinstance(raw, str):
            items: list[object] = list(raw.split(","))
        elif isinstance(raw, list):
            items = list(raw)
        else:
            raise ParamError(f"{self.key} must be a name, or names separated by commas (a list in a body)")
        if not items or len(items) > self.most:
            raise ParamError(f"{self.key} must name 1 to {self.most} values")
        names = set()
        for item in items:
            if not isinstance(item, str):
                raise ParamError(f"{self.key} must hold names (text)")
            if self.allowed is not None and item not in self.allowed:
                raise ParamError(f"{self.key} must be among {', '.join(self.allowed)}")
            problem = name_problem(item)
            if problem is not None:
                raise ParamError(f"{self.key} holds a name that is not valid: {problem}")
            names.add(item)
        return frozenset(names)

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "minLength": 1}

    def parameter(self, where: str = "query") -> dict[str, Any]:
        return {
            **super().parameter(where),
            "description": f"{self.description} (several: separated by commas)",
        }

    def body_schema(self) -> dict[str, Any]:
        """In a JSON body, a name or a list of names."""
        one = {"type": "string", "enum": list(self.allowed)} if self.allowed else dict(NAME_SCHEMA)
        return {"oneOf": [one, {"type": "array", "items": one, "minItems": 1, "maxItems": self.most}]}


@dataclass(frozen=True)
class Cursor(Field):
    """The ``next`` of a previous answer, decoded by the route (its size depends on the order)."""

    def check(self, raw: object) -> str:
        if not isinstance(raw, str):  # (its length and content: params.cursor, which decodes it)
            raise ParamError(f"{self.key} is not a cursor this API gave out (use the 'next' of an answer)")
        return raw

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "maxLength": MAX_CURSOR_CHARS}


@dataclass(frozen=True)
class Ids(Field):
    """A list of 1 to ``most`` ids (``description`` says of what), each a whole number from 1 to
    ``maximum`` (in a JSON body)."""

    most: int = 1000
    maximum: int = 2**63 - 1

    def check(self, raw: object) -> list[int]:
        items = raw if isinstance(raw, list) else []
        if not 1 <= len(items) <= self.most or not all(self._id(item) for item in items):
            raise ParamError(
                f"{self.key} must be a list of 1 to {self.most:,} {self.description} (whole numbers from 1)"
            )
        return list(items)

    def _id(self, item: object) -> bool:
        return type(item) is int and 1 <= item <= self.maximum

    def schema(self) -> dict[str, Any]:
        return {
            "type": "array",
            "minItems": 1,
            "maxItems": self.most,
            "items": {"type": "integer", "minimum": 1, "maximum": self.maximum},
        }


@dataclass(frozen=True)
class Value(Field):
    """What a device is told: a finite number, true or false, or 1 to ``max_length`` characters
    without NUL; read as the MQTT payload that says it."""

    max_length: int = 256

    def check(self, raw: object) -> str:
        if isinstance(raw, bool):
            return "true" if raw else "false"
        if isinstance(raw, int | float):
            if not math.isfinite(raw):
                raise ParamError(f"{self.key} must be a finite number")
            return json.dumps(raw)
        if isinstance(raw, str):
            if not raw or len(raw) > self.max_length or "\x00" in raw:
                raise ParamError(f"{self.key} must be 1 to {self.max_length} characters, without NUL")
            return raw
        raise ParamError(f"{self.key} must be a number, true/false or text")

    def schema(self) -> dict[str, Any]:
        return {"type": ["number", "boolean", "string"], "maxLength": self.max_length}


class Query:
    """The fields of one request, in the order the document lists them."""

    def __init__(self, *fields: Field) -> None:
        self.fields = fields

    def read(self, source: Mapping[str, Any]) -> dict[str, Any]:
        """Every field's value (absent ones at their default), checked in order."""
        return {field.key: field.read(source) for field in self.fields}

    def parameters(self, where: str = "query") -> list[dict[str, Any]]:
        """The fields as OpenAPI parameters ``where`` (query or path)."""
        return [field.parameter(where) for field in self.fields]

    def body_schema(self, **extra: dict[str, Any]) -> dict[str, Any]:
        """The fields as the properties of a JSON body (with ``extra`` properties)."""
        properties = {field.key: field.body_schema() for field in self.fields}
        schema: dict[str, Any] = {
            "type": "object",
            "additionalProperties": False,
            "properties": {**extra, **properties},
        }
        required = [field.key for field in self.fields if field.required]
        if required:
            schema["required"] = required
        return schema

    def keys(self) -> Collection[str]:
        """The keys of the fields."""
        return [field.key for field in self.fields]
