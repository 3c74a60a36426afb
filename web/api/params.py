"""Query parameters of the API: parsed once, each error a one-line message naming the parameter."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection, Sequence
from datetime import datetime

from werkzeug.datastructures import MultiDict

from wire.names import MAX_NAME_CHARS, name_problem
from wire.timestamps import MAX_TS_MS, epoch_ms

#: Longest request line the server accepts (gunicorn's ``--limit-request-line``, set by ./lab and the
#: image): longer ones are answered 414 by the server itself (see :mod:`web.server`).
MAX_REQUEST_LINE = 8190
#: A cursor names at most three names of MAX_NAME_CHARS (4 bytes of UTF-8 each at most), as
#: base64 of JSON: its encoded form stays below this.
MAX_CURSOR_CHARS = 2 * 3 * 4 * MAX_NAME_CHARS


class ParamError(ValueError):
    """A query parameter is missing or wrong; the message names it (the API answers 400)."""


class Unavailable(Exception):  # noqa: N818 - an answer, not a failure
    """What was asked cannot be done right now; the message says why (the API answers 503)."""


def path_name(key: str, value: str) -> str:
    """A room, device or attribute name from the request's path, by the lab's rule for names."""
    problem = name_problem(value)
    if problem is not None:
        raise ParamError(f"{key} is not a valid name: {problem}")
    return value


def name(args: MultiDict[str, str], key: str, *, required: bool = False) -> str | None:
    """A room, device or attribute name, by the lab's one rule for names (:mod:`wire.names`)."""
    value = args.get(key)
    if value is None:
        if required:
            raise ParamError(f"{key} is required")
        return None
    problem = name_problem(value)
    if problem is not None:
        raise ParamError(f"{key} is not a valid name: {problem}")
    return value


def prefix(args: MultiDict[str, str], key: str) -> str | None:
    """The start of a name (what a name may hold, but possibly ending in a space)."""
    value = args.get(key)
    if value is None:
        return None
    problem = name_problem(value.rstrip() or "x")
    if problem is not None:
        raise ParamError(f"{key} cannot begin a valid name: {problem}")
    return value


def text(args: MultiDict[str, str], key: str, *, max_length: int) -> str | None:
    """Free text to search for: at most ``max_length`` characters, printable."""
    value = args.get(key)
    if value is None:
        return None
    if len(value) > max_length or not value.isprintable():
        raise ParamError(f"{key} must be at most {max_length} printable characters")
    return value


def make_cursor(parts: Sequence[str]) -> str:
    """An opaque cursor for the page after the item named by ``parts`` (its sort key)."""
    return base64.urlsafe_b64encode(json.dumps(list(parts), ensure_ascii=False).encode()).decode().rstrip("=")


def cursor(args: MultiDict[str, str], key: str, size: int) -> tuple[str, ...] | None:
    """A cursor this API gave out (``next`` of an answer), decoded to the sort key it names."""
    value = args.get(key)
    if value is None:
        return None
    try:
        if len(value) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        decoded = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ParamError(f"{key} is not a cursor this API gave out (use the 'next' of an answer)") from None
    if not (isinstance(decoded, list) and len(decoded) == size and all(isinstance(p, str) for p in decoded)):
        raise ParamError(f"{key} is not a cursor this API gave out (use the 'next' of an answer)")
    return tuple(decoded)


def required_name(args: MultiDict[str, str], key: str) -> str:
    """Like :func:`name`, but the parameter must be present."""
    value = name(args, key, required=True)
    if value is None:  # pragma: no cover - name() raised already
        raise ParamError(f"{key} is required")
    return value


def integer(args: MultiDict[str, str], key: str, *, default: int, minimum: int, maximum: int) -> int:
    """A whole number within [minimum, maximum], or `default` when absent."""
    raw = args.get(key)
    if raw is None:
        return default
    text = raw.strip()
    if not (text.isascii() and text.lstrip("-").isdigit()) or len(text) > 20:
        raise ParamError(f"{key} must be a whole number")
    value = int(text)
    if not minimum <= value <= maximum:
        raise ParamError(f"{key} must be between {minimum} and {maximum}")
    return value


def optional_integer(args: MultiDict[str, str], key: str, *, minimum: int, maximum: int) -> int | None:
    """Like :func:`integer`, but None when absent."""
    if args.get(key) is None:
        return None
    return integer(args, key, default=minimum, minimum=minimum, maximum=maximum)


def choice(args: MultiDict[str, str], key: str, options: Collection[str], default: str) -> str:
    """One of `options`, or `default` when absent."""
    value = args.get(key, default)
    if value not in options:
        raise ParamError(f"{key} must be one of {', '.join(options)}")
    return value


def timestamp(args: MultiDict[str, str], key: str, *, default: int) -> int:
    """Milliseconds since 1970 (UTC)."""
    return integer(args, key, default=default, minimum=0, maximum=MAX_TS_MS)


def to_ms(moment: datetime | None) -> int | None:
    """An aware datetime as milliseconds since 1970 (:mod:`wire.timestamps`), or None."""
    return None if moment is None else epoch_ms(moment)
