"""The Node-RED editor's sign-in cannot be locked against its owner.

Node-RED on its own counts failures per user name for everyone: five wrong passwords from
anywhere lock the editor for ten minutes, the right password included (500). The lab's
settings.js counts them per client address instead, before Node-RED sees them.
"""

from __future__ import annotations

import pytest
import requests

from tests.conftest import RunningLab
from tests.web.portal_testing import session_from

pytestmark = pytest.mark.integration

FAILURES_ALLOWED = 5  # MAX_FAILURES in nodered/settings.js


def sign_in(
    lab: RunningLab, session: requests.Session, password: str, *, as_json: bool = False
) -> requests.Response:
    fields = {
        "client_id": "node-red-editor",
        "grant_type": "password",
        "scope": "*",
        "username": "admin",
        "password": password,
    }
    url = f"http://127.0.0.1:{lab.port('NODERED_PORT')}/auth/token"
    if as_json:
        return session.post(url, json=fields, timeout=10)
    return session.post(url, data=fields, timeout=10)


def test_wrong_passwords_lock_out_their_address_not_the_owner(lab: RunningLab) -> None:
    attacker, owner = session_from("127.0.0.31"), session_from("127.0.0.32")
    for _ in range(FAILURES_ALLOWED):
        answer = sign_in(lab, attacker, "guess")
        assert answer.status_code == 403
        assert answer.json()["error"] == "invalid_grant"
    for _ in range(3):
        refused = sign_in(lab, attacker, lab.env["NODERED_ADMIN_PASSWORD"])
        assert refused.status_code == 429, "the attacker's address waits, whatever it sends"
        assert int(refused.headers["Retry-After"]) > 0
    for as_json in (False, True):
        granted = sign_in(lab, owner, lab.env["NODERED_ADMIN_PASSWORD"], as_json=as_json)
        assert granted.status_code == 200, granted.text
        assert granted.json()["access_token"]


def test_many_addresses_failing_never_lock_the_editor(lab: RunningLab) -> None:
    for last in range(40, 48):
        answer = sign_in(lab, session_from(f"127.0.0.{last}"), "guess")
        assert answer.status_code == 403, "never Node-RED's 500 'too many login attempts'"
    granted = sign_in(lab, session_from("127.0.0.48"), lab.env["NODERED_ADMIN_PASSWORD"])
    assert granted.status_code == 200, granted.text


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"null", 400),  # used to end Node-RED (an unhandled rejection)
        (b"[]", 400),
        (b'"admin"', 400),
        (b"42", 400),
        (b"x" * 70_000, 413),
    ],
)
def test_an_unreadable_sign_in_is_refused_and_the_editor_lives_on(
    lab: RunningLab, body: bytes, status: int
) -> None:
    url = f"http://127.0.0.1:{lab.port('NODERED_PORT')}/auth/token"
    answer = session_from("127.0.0.49").post(
        url, data=body, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert answer.status_code == status
    granted = sign_in(lab, session_from("127.0.0.50"), lab.env["NODERED_ADMIN_PASSWORD"])
    assert granted.status_code == 200, "Node-RED is still there"
