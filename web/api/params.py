"""What the API's routes share about their parameters: the error a bad one raises (400), names in
a path, paging cursors, times as milliseconds. The query parameters themselves are declared as
:mod:`web.api.fields`."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence

from web.errors import PortalError
from wire.names import MAX_NAME_CHARS

#: Longest request line the server accepts (gunicorn's ``--limit-request-line``, set by ./lab and the
#: image): longer ones are answered 414 by the server itself (see :mod:`web.server`).
MAX_REQUEST_LINE = 8190
#: A cursor names at most three names of MAX_NAME_CHARS (4 bytes of UTF-8 each at most), as
#: base64 of JSON: its encoded form stays below this.
MAX_CURSOR_CHARS = 2 * 3 * 4 * MAX_NAME_CHARS


class ParamError(PortalError, ValueError):
    """A query parameter is missing or wrong; the message names it (the API answers 400)."""


class Unavailable(PortalError):  # noqa: N818 - an answer, not a failure
    """What was asked cannot be done right now; the message says why (the API answers 503)."""


def make_cursor(parts: Sequence[str]) -> str:
    """An opaque cursor for the page after the item named by ``parts`` (its sort key)."""
    return base64.urlsafe_b64encode(json.dumps(list(parts), ensure_ascii=False).encode()).decode().rstrip("=")


def cursor(value: str | None, key: str, size: int) -> tuple[str, ...] | None:
    """A cursor this API gave out (``next`` of an answer, read by a :class:`~web.api.fields.Cursor`
    field), decoded to the sort key of ``size`` parts it names; None when there is none."""
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
