"""Sign-in throttles that cannot be turned against the owner, over real HTTP from several addresses.

Every address of 127.0.0.0/8 reaches the lab on this machine, so each test is several clients:
an attacker's failures throttle the attacker's address, and the owner signs in from another.
"""

from __future__ import annotations

import pytest

from tests.conftest import RunningLab
from tests.web.portal_testing import session_from, sign_in_over_http
from web.auth import MAX_ADDRESS_FAILURES, MAX_LOGIN_FAILURES

pytestmark = pytest.mark.integration


def test_wrong_passwords_lock_out_their_address_not_the_owner(lab: RunningLab) -> None:
    admin, password = lab.env["PORTAL_ADMIN_USER"], lab.env["PORTAL_ADMIN_PASSWORD"]
    attacker = session_from("127.0.0.21")
    for _ in range(MAX_LOGIN_FAILURES):
        assert sign_in_over_http(attacker, lab.portal_url, admin, "guess").status_code == 401
    refused = sign_in_over_http(attacker, lab.portal_url, admin, password)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    owner = session_from("127.0.0.22")
    assert sign_in_over_http(owner, lab.portal_url, admin, password).status_code == 302


def test_one_address_trying_many_names_is_limited(lab: RunningLab) -> None:
    admin, password = lab.env["PORTAL_ADMIN_USER"], lab.env["PORTAL_ADMIN_PASSWORD"]
    sprayer = session_from("127.0.0.23")
    for attempt in range(MAX_ADDRESS_FAILURES):
        response = sign_in_over_http(sprayer, lab.portal_url, f"user{attempt}", "Winter2026!")
        assert response.status_code == 401, "each name on its own stays under the per-name limit"
    assert sign_in_over_http(sprayer, lab.portal_url, admin, password).status_code == 429
    owner = session_from("127.0.0.24")
    assert sign_in_over_http(owner, lab.portal_url, admin, password).status_code == 302
