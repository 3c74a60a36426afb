"""`./lab devices`: list the lab's devices, and remove them with their data, through the portal.

Removal goes through the portal's API (``DELETE /api/devices...``), never straight to the
database: the portal also forgets the devices in memory, tells the rules, deletes the broker's
retained alarms and updates open pages. The command signs in as ``PORTAL_ADMIN_USER`` of ``.env``,
with the standard library only (``./lab`` runs before any virtual environment exists).
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

from labctl import ui
from labctl.config import LabConfig
from labctl.services import ServiceError

TIMEOUT_S = 120.0  # removing tens of thousands of devices with their history takes a while
PAGE = 1000
_CSRF_FIELD = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def add_parser(commands: Any) -> None:
    """The ``devices`` command and its subcommands, under ``./lab``'s subparsers."""
    devices = commands.add_parser(
        "devices",
        help="list devices, or remove them with their values, history and alarms",
        description="List the lab's devices, or remove devices with their telemetry, latest values "
        "and alarms, through the running portal (signed in as PORTAL_ADMIN_USER of .env). A removed "
        "device that publishes again comes back as a new one.",
    )
    actions = devices.add_subparsers(dest="devices_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="print room, device, last seen and attributes of each device")
    _filters(listing)
    listing.add_argument("--search", metavar="TEXT", help="only devices whose room or name holds TEXT")
    remove = actions.add_parser(
        "remove",
        help="remove one device (ROOM DEVICE), or every device of --room and/or --prefix",
        description="Remove one device (ROOM DEVICE), every device of a room (--room R), or every "
        "device whose name starts with a prefix (--prefix P, in --room or in every room), with its "
        "telemetry, latest values and alarms. Asks first unless --yes.",
    )
    remove.add_argument("one_room", nargs="?", metavar="ROOM", help="the room of the one device to remove")
    remove.add_argument("one_device", nargs="?", metavar="DEVICE", help="the one device to remove")
    _filters(remove)
    remove.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--room", metavar="ROOM", help="only the devices of this room")
    parser.add_argument("--prefix", metavar="PREFIX", help="only the devices whose name starts with this")


class PortalError(ServiceError):
    """The portal cannot be reached, refused the sign-in, or refused the request (one line)."""


class Portal:
    """A signed-in session with the lab's portal (cookie and CSRF token, as the pages hold them)."""

    def __init__(self, config: LabConfig) -> None:
        self.base = f"http://127.0.0.1:{config.port('PORTAL_PORT')}"
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirects()
        )
        self._csrf = ""
        self._sign_in(config.env["PORTAL_ADMIN_USER"], config.env["PORTAL_ADMIN_PASSWORD"])

    def call(self, method: str, path: str, params: dict[str, str | None] | None = None) -> tuple[int, Any]:
        """One API request; the status and the JSON answer (None when empty). 4xx/5xx: PortalError."""
        query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None})
        status, body = self._send(method, path + (f"?{query}" if query else ""), None)
        answer = json.loads(body) if body else None
        if status >= 400:
            message = answer.get("error") if isinstance(answer, dict) else None
            said = message or body[:200].decode(errors="replace")
            raise PortalError(f"the portal answered {status}: {said}")
        return status, answer

    def _sign_in(self, user: str, password: str) -> None:
        _, page = self._send("GET", "/login", None)
        found = _CSRF_FIELD.search(page.decode(errors="replace"))
        if found is None:
            raise PortalError(f"{self.base} shows no sign-in form at /login: is it the lab's portal?")
        form = {"username": user, "password": password, "csrf_token": found.group(1)}
        status, _ = self._send("POST", "/login", urllib.parse.urlencode(form).encode())
        if status not in (302, 303):
            raise PortalError(
                f"the portal refused the sign-in of PORTAL_ADMIN_USER={user!r} (HTTP {status}): "
                "check PORTAL_ADMIN_PASSWORD in .env and restart the portal (./lab restart web)"
            )
        _, home = self._send("GET", "/", None)
        meta = _CSRF_META.search(home.decode(errors="replace"))
        if meta is None:
            raise PortalError("the portal's page carries no CSRF token: is it the lab's portal?")
        self._csrf = meta.group(1)

    def _send(self, method: str, path: str, form: bytes | None) -> tuple[int, bytes]:
        headers = {"Accept": "application/json"}
        if self._csrf:
            headers["X-CSRF-Token"] = self._csrf
        if form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        # S310: the address is always http://127.0.0.1:<port> of this lab
        request = urllib.request.Request(self.base + path, data=form, headers=headers, method=method)  # noqa: S310
        try:
            with self._opener.open(request, timeout=TIMEOUT_S) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as answer:
            return answer.code, answer.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PortalError(
                f"the portal at {self.base} cannot be reached ({reason}): start the lab with ./lab up"
            ) from exc


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects come back as answers (the sign-in's 302 is how success is told)."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def run(config: LabConfig, args: argparse.Namespace) -> int:
    """Carry out ``./lab devices list|remove``."""
    if args.devices_command == "remove":
        selection = _selection(args)  # refuse a bad command line before signing in
        return _remove(Portal(config), selection, args.yes)
    return _list(Portal(config), args)


def _list(portal: Portal, args: argparse.Namespace) -> int:
    cursor: str | None = None
    shown = 0
    while True:
        asked = {"room": args.room, "prefix": args.prefix, "q": args.search, "cursor": cursor}
        _, page = portal.call("GET", "/api/devices", {**asked, "limit": str(PAGE)})
        if shown == 0:  # on stderr: stdout is one tab-separated line per device, for scripts
            print(f"{page['total']:,} device(s)" if page["total"] else "no devices", file=sys.stderr)
        for device in page["devices"]:
            attrs = ", ".join(item["attr"] for item in device["attributes"])
            print(f"{device['room']}\t{device['device']}\t{_when(device['last_seen'])}\t{attrs}")
            shown += 1
        cursor = page["next"]
        if cursor is None:
            return 0


def _when(ms: int | None) -> str:
    if ms is None:
        return "never"
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _selection(args: argparse.Namespace) -> dict[str, str | None]:
    """What to remove, from the command line; one-line errors for what cannot be meant."""
    if args.one_room is not None:
        if args.one_device is None:
            raise ServiceError("name the device too: ./lab devices remove ROOM DEVICE")
        if args.room is not None or args.prefix is not None:
            raise ServiceError("give either ROOM DEVICE or --room/--prefix, not both")
        return {"room": args.one_room, "device": args.one_device}
    if args.room is None and args.prefix is None:
        raise ServiceError(
            "say which devices to remove: ROOM DEVICE, --room ROOM or --prefix PREFIX "
            "(./lab devices remove --help)"
        )
    if args.prefix == "":
        raise ServiceError("--prefix must not be empty (to remove a whole room, give only --room)")
    return {"room": args.room, "prefix": args.prefix}


def _remove(portal: Portal, selection: dict[str, str | None], yes: bool) -> int:
    one = selection.get("device") is not None
    what = (
        f"device {selection['device']!r} of room {selection['room']!r}"
        if one
        else _described(selection, _count(portal, selection))
    )
    if not yes:
        if not sys.stdin.isatty():
            raise ServiceError(f"not removing {what} without a question: add --yes to remove without one")
        reply = input(f"Remove {what} with their values, history and alarms? [y/N] ").strip().lower()
        if reply not in ("y", "yes"):
            ui.info("nothing removed")
            return 1
    if one:
        room, device = (urllib.parse.quote(str(selection[key]), safe="") for key in ("room", "device"))
        try:
            portal.call("DELETE", f"/api/devices/{room}/{device}")
        except PortalError as exc:
            if "answered 404" in str(exc):
                raise PortalError(f"there is no {what}") from exc
            raise
        ui.info(f"removed {what}")
        return 0
    _, answer = portal.call("DELETE", "/api/devices", selection)
    ui.info(f"removed {answer['deleted']:,} device(s)")
    return 0


def _count(portal: Portal, selection: dict[str, str | None]) -> int:
    _, page = portal.call("GET", "/api/devices", {**selection, "limit": "1"})
    return int(page["total"])


def _described(selection: dict[str, str | None], count: int) -> str:
    where = f" of room {selection['room']!r}" if selection.get("room") is not None else ""
    named = f" whose name starts with {selection['prefix']!r}" if selection.get("prefix") is not None else ""
    return f"{count:,} device(s){where}{named}"
