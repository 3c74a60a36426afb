"""The portal's HTTP side, as the viewers use it: signing in, and its rooms and devices."""

from __future__ import annotations

import asyncio
import os
import re
import time
from typing import Any

import aiohttp

from stress.viewers import ViewersError

#: Devices seen this recently are the ones viewers are dealt over (when any are).
ACTIVE_S = 60.0
#: Devices asked per page of ``GET /api/devices``, and most pages read (the lab's own cap on
#: devices, 100,000 by default, fits).
DEVICE_PAGE = 1000
MAX_DEVICE_PAGES = 200
_CSRF_FIELD = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


async def sign_in(
    session: aiohttp.ClientSession, portal_url: str, username: str, password: str, timeout: float
) -> None:
    """Sign in through the portal's form (with its CSRF token); the session keeps the cookie.

    Raises:
        ViewersError: the portal refused the account, or could not be reached in ``timeout``.
    """
    try:
        async with asyncio.timeout(timeout):
            async with session.get(f"{portal_url}/login", allow_redirects=False) as page:
                html = await page.text() if page.status == 200 else ""
                status = page.status
            found = _CSRF_FIELD.search(html)
            if found is None:
                raise ViewersError(
                    f"{portal_url} shows no sign-in form at /login (HTTP {status}): is it the lab's portal?"
                )
            form = {"username": username, "password": password, "csrf_token": found.group(1)}
            async with session.post(f"{portal_url}/login", data=form, allow_redirects=False) as answer:
                status = answer.status
    except TimeoutError:
        raise ViewersError(f"the portal at {portal_url} did not answer within {timeout:g} s") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise ViewersError(
            f"cannot reach the portal at {portal_url}: {failure_reason(exc, timeout)}"
        ) from None
    if status in (302, 303):
        return
    raise ViewersError(
        {
            401: f"the portal refused the sign-in of {username!r}: wrong user name or password",
            429: "the portal refuses sign-ins for now after too many failures: try again in a minute",
            503: "the portal cannot check sign-ins: its database is unreachable",
        }.get(status, f"the portal refused the sign-in: HTTP {status}")
    )


async def portal_rooms(
    session: aiohttp.ClientSession, portal_url: str, timeout: float
) -> tuple[dict[str, list[str]], set[tuple[str, str]]]:
    """The portal's rooms and the devices of each (``GET /api/devices``, signed in, page by page),
    and the (room, device) pairs seen in the last ``ACTIVE_S`` seconds.

    Raises:
        ViewersError: the portal did not answer with its device list.
    """
    rooms: dict[str, list[str]] = {}
    active: set[tuple[str, str]] = set()
    lately = (time.time() - ACTIVE_S) * 1000
    cursor: str | None = None
    for _page in range(MAX_DEVICE_PAGES):
        body = await _devices_page(session, portal_url, cursor, timeout)
        for device in body.get("devices", []):
            rooms.setdefault(device["room"], []).append(device["device"])
            if isinstance(device.get("last_seen"), int | float) and device["last_seen"] >= lately:
                active.add((device["room"], device["device"]))
        cursor = body.get("next")
        if not isinstance(cursor, str):
            break
    return rooms, active


async def _devices_page(
    session: aiohttp.ClientSession, portal_url: str, cursor: str | None, timeout: float
) -> dict[str, Any]:
    params = {"limit": str(DEVICE_PAGE)} if cursor is None else {"limit": str(DEVICE_PAGE), "cursor": cursor}
    try:
        async with (
            asyncio.timeout(timeout),
            session.get(f"{portal_url}/api/devices", params=params) as answer,
        ):
            if answer.status != 200:
                raise ViewersError(f"the portal did not list its devices: HTTP {answer.status}")
            body = await answer.json()
    except TimeoutError:
        raise ViewersError(f"the portal did not list its devices within {timeout:g} s") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise ViewersError(f"the portal did not list its devices: {failure_reason(exc, timeout)}") from None
    if not isinstance(body, dict) or not isinstance(body.get("devices"), list):
        raise ViewersError("the portal's device list is not what this tool understands (GET /api/devices)")
    return body


def failure_reason(exc: BaseException, timeout: float) -> str:
    """A short reason for a failed or lost connection."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"HTTP {exc.status} at the WebSocket handshake"
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
        return os.strerror(errno) if errno else f"cannot connect: {exc.os_error}"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
