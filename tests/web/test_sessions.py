"""Sessions end on the server: at sign-out, when a user is removed, when a password changes.

A signed cookie alone proves nothing once its session has ended: after signing out, a copy of
the old cookie (a stolen one, or a second tab) no longer reads the API nor opens Socket.IO, and
live connections of that session are closed. Removing a user, changing their password or
revoking a token (from the command line, another process) closes their live connections within
the portal's session check (every 10 s).
"""

from __future__ import annotations

import re
import time

import pytest
import requests

from tests.conftest import RunningLab
from tests.web.live_clients import RawViewer
from tests.web.portal_testing import api_token, signed_in_session, users_cli

pytestmark = pytest.mark.integration

#: The portal's session check runs every 10 s (SessionKeeper); what it closes is closed by then.
CHECK_S = 10.0


def cookie_of(session: requests.Session) -> str:
    return "; ".join(f"{name}={value}" for name, value in session.cookies.items())


def copy_of(session: requests.Session) -> requests.Session:
    """Another client holding the same cookie (a second tab, or a stolen cookie)."""
    other = requests.Session()
    other.cookies.update(session.cookies)
    return other


def sign_out(lab: RunningLab, session: requests.Session) -> None:
    page = session.get(f"{lab.portal_url}/", timeout=10).text
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
    assert found, "the overview carries the CSRF token"
    answer = session.post(
        f"{lab.portal_url}/logout", data={"csrf_token": found.group(1)}, allow_redirects=False, timeout=10
    )
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/login")


def refused(viewer: RawViewer) -> bool:
    """The portal answered the Socket.IO connect with an error, or closed the connection."""
    frames = viewer.read(3.0)
    return viewer.closed or any(frame.opcode == 1 and frame.text.startswith("44") for frame in frames)


def closed_within(viewers: list[RawViewer], seconds: float) -> list[bool]:
    """Read every viewer until the portal ends its connection (``41``), or `seconds` pass."""
    ended = [False] * len(viewers)
    deadline = time.monotonic() + seconds
    while not all(ended) and time.monotonic() < deadline:
        for index, viewer in enumerate(viewers):
            if not ended[index]:
                frames = viewer.read(0.2)
                ended[index] = viewer.closed or any(f.opcode == 1 and f.text.startswith("41") for f in frames)
    return ended


def test_signing_out_ends_the_session_for_every_copy_of_the_cookie(lab: RunningLab) -> None:
    browser = signed_in_session(
        lab.portal_url, lab.env["PORTAL_ADMIN_USER"], lab.env["PORTAL_ADMIN_PASSWORD"]
    )
    stolen = copy_of(browser)
    assert stolen.get(f"{lab.portal_url}/api/latest", timeout=10).status_code == 200
    live = RawViewer(lab.portal_url, cookie_of(browser), [{"scope": "site"}])
    assert not refused(live), "signed in: the live connection is accepted"

    sign_out(lab, browser)

    assert closed_within([live], 3.0) == [True], "the session's live connection is closed at once"
    answer = stolen.get(f"{lab.portal_url}/api/latest", timeout=10)
    assert answer.status_code == 401
    assert "error" in answer.json()
    assert stolen.get(f"{lab.portal_url}/", allow_redirects=False, timeout=10).status_code == 302
    late = RawViewer(lab.portal_url, cookie_of(stolen), [{"scope": "site"}])
    assert refused(late), "the old cookie cannot open Socket.IO"
    late.close()


def test_removing_a_user_changing_a_password_or_revoking_a_token_closes_their_connections(
    lab: RunningLab, unique_room: str
) -> None:
    names = [f"gone-{unique_room}", f"moved-{unique_room}"]
    password = "first password 1"
    sessions, viewers = [], []
    for name in names:
        assert users_cli(lab, "add", name, "--password-stdin", stdin=password + "\n").returncode == 0
        session = signed_in_session(lab.portal_url, name, password)
        sessions.append(session)
        viewers.append(RawViewer(lab.portal_url, cookie_of(session), [{"scope": "site"}]))
    token = api_token(lab, names[1], label="live")
    token_viewer = RawViewer(lab.portal_url, "", [{"scope": "site"}], token=token)
    assert not any(refused(viewer) for viewer in [*viewers, token_viewer])

    assert users_cli(lab, "remove", names[0]).returncode == 0
    assert users_cli(lab, "passwd", names[1], "--password-stdin", stdin="second password 2\n").returncode == 0
    token_id = next(
        line.split()[0] for line in users_cli(lab, "token", "list").stdout.splitlines() if "live" in line
    )
    assert users_cli(lab, "token", "revoke", token_id).returncode == 0

    for session in sessions:
        assert session.get(f"{lab.portal_url}/api/latest", timeout=10).status_code == 401, "at once over HTTP"
    assert closed_within([*viewers, token_viewer], CHECK_S + 5) == [True, True, True]
