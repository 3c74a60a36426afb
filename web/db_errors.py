"""How the portal names a database error: PostgreSQL's own first line.

A SQLAlchemy error's text goes on with the statement and its parameters (values devices sent,
password verifiers); logs, pages and API answers show only the first line of the driver's own
message, which says what went wrong ("connection refused", "relation ... does not exist").
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of the driver's message under ``exc`` (or of ``exc``'s own), else its type."""
    original = getattr(exc, "orig", None)
    lines = str(original if original is not None else exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
