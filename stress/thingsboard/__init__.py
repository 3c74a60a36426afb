"""ThingsBoard: its REST API (provisioning, lifecycle, checks) and where its settings come from."""

from __future__ import annotations

from urllib.parse import urlsplit

from stress.errors import StressError


class TbError(StressError):
    """A ThingsBoard request failed for good; the message is one line.

    ``status`` is the HTTP status (0 when no answer came) and ``code`` ThingsBoard's errorCode.
    """

    def __init__(self, message: str, status: int = 0, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def gateway_name(prefix: str, number: int) -> str:
    """The name of gateway ``number`` (from 1) of a fleet: ``<prefix>-gateway-01``."""
    return f"{prefix}-gateway-{number:02d}"


def check_url(url: str) -> str:
    """``url`` without a trailing slash, or :class:`TbError` when it is not an http(s) URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TbError(
            f"TB_URL {url!r} is not a ThingsBoard URL: write it as http://HOST:8080 (or https://...)"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise TbError(f"TB_URL {url!r} has a bad port: write it as http://HOST:8080") from None
    return url.strip().rstrip("/")
