"""Portal users and API tokens: hashing, the command line, and signing in with what it creates."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import requests

from tests.conftest import RunningLab
from tests.web.portal_testing import api_token, closed_port, signed_in_session, users_cli
from web.accounts import (
    AccountError,
    check_name,
    check_new_password,
    hash_password,
    verify_password,
)
from web.users import build_parser

# -- unit ----------------------------------------------------------------------------------


def test_password_hashes_are_salted_scrypt_and_verify() -> None:
    first, second = hash_password("s3cret-pass"), hash_password("s3cret-pass")
    assert first != second  # a salt per hash
    assert first.startswith("scrypt$16384$8$1$")
    assert "s3cret-pass" not in first
    assert verify_password("s3cret-pass", first)
    assert not verify_password("s3cret-pasS", first)
    assert not verify_password("", first)


@pytest.mark.parametrize(
    "stored",
    ["", "plain", "scrypt$1$2$3", "md5$1$1$1$AAAA$AAAA", "scrypt$x$8$1$AAAA$AAAA", "scrypt$3$8$1$!!$AA"],
)
def test_malformed_hashes_never_verify(stored: str) -> None:
    assert not verify_password("anything", stored)


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "é", "a/b", "<script>", "a\x00"])
def test_bad_user_names_are_refused(name: str) -> None:
    with pytest.raises(AccountError):
        check_name(name)


def test_good_user_names() -> None:
    for name in ("alice", "bob.smith", "ops-team_2", "a@b.c"):
        assert check_name(name) == name


@pytest.mark.parametrize("password", ["short", "x" * 1025])
def test_weak_or_huge_passwords_are_refused(password: str) -> None:
    with pytest.raises(AccountError):
        check_new_password(password)


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for command in ("add", "list", "remove", "passwd", "token"):
        assert command in text
    with pytest.raises(SystemExit):
        build_parser().parse_args(["token", "--help"])
    token_help = capsys.readouterr().out
    for command in ("create", "list", "revoke"):
        assert command in token_help


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("POSTGRES_", "PORTAL_"))}
    return subprocess.run(
        [sys.executable, "-m", "web.users", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
        check=False,
        cwd="/",
    )


def test_cli_without_settings_says_what_is_missing() -> None:
    result = _cli("list")
    assert result.returncode == 2
    assert "POSTGRES_PASSWORD is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_with_the_database_down_fails_in_one_line() -> None:
    result = _cli("list", POSTGRES_PORT=str(closed_port()), POSTGRES_PASSWORD="x")
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach the database at 127.0.0.1:")
    assert result.stderr.count("\n") == 1


def test_cli_needs_a_password_source_without_a_terminal() -> None:
    result = _cli("add", "alice", POSTGRES_PORT=str(closed_port()), POSTGRES_PASSWORD="x")
    assert result.returncode == 1
    assert "--password-stdin" in result.stderr


# -- with the lab ----------------------------------------------------------------------------


def _sign_in_status(lab: RunningLab, user: str, password: str) -> int:
    try:
        signed_in_session(lab.portal_url, user, password)
    except AssertionError:
        return 401
    return 302


@pytest.mark.integration
def test_user_lifecycle_through_the_cli(lab: RunningLab) -> None:
    name = f"user-{uuid.uuid4().hex[:8]}"
    added = users_cli(lab, "add", name, "--password-stdin", stdin="first-password\n")
    assert added.returncode == 0, added.stderr
    assert name in users_cli(lab, "list").stdout
    again = users_cli(lab, "add", name, "--password-stdin", stdin="first-password\n")
    assert (again.returncode, again.stderr.strip()) == (1, f"error: user {name!r} already exists")

    session = signed_in_session(lab.portal_url, name, "first-password")
    assert session.get(f"{lab.portal_url}/api/devices", timeout=10).status_code == 200

    changed = users_cli(lab, "passwd", name, "--password-stdin", stdin="second-password\n")
    assert changed.returncode == 0, changed.stderr
    # The old session ends with the old password; the new password works.
    assert session.get(f"{lab.portal_url}/api/devices", timeout=10).status_code == 401
    session = signed_in_session(lab.portal_url, name, "second-password")

    removed = users_cli(lab, "remove", name)
    assert removed.returncode == 0, removed.stderr
    assert name not in users_cli(lab, "list").stdout
    assert session.get(f"{lab.portal_url}/api/devices", timeout=10).status_code == 401
    with pytest.raises(AssertionError, match="401"):
        signed_in_session(lab.portal_url, name, "second-password")
    gone = users_cli(lab, "remove", name)
    assert gone.returncode == 1
    assert "no user" in gone.stderr


@pytest.mark.integration
def test_the_administrator_needs_no_account(lab: RunningLab) -> None:
    admin = lab.env["PORTAL_ADMIN_USER"]
    result = users_cli(lab, "add", admin, "--password-stdin", stdin="some-password\n")
    assert result.returncode == 1
    assert "administrator" in result.stderr


@pytest.mark.integration
def test_tokens_work_until_revoked(lab: RunningLab) -> None:
    token = api_token(lab, label="lifecycle")
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{lab.portal_url}/api/devices", headers=headers, timeout=10).status_code == 200
    # No CSRF header is needed with a bearer token.
    assert (
        requests.post(f"{lab.portal_url}/api/alarms/999999999/ack", headers=headers, timeout=10).status_code
        == 404
    )

    listing = users_cli(lab, "token", "list").stdout
    assert token not in listing
    token_id = next(
        line.split()[0] for line in listing.splitlines() if "lifecycle" in line and "active" in line
    )
    revoked = users_cli(lab, "token", "revoke", token_id)
    assert revoked.returncode == 0, revoked.stderr
    refused = requests.get(f"{lab.portal_url}/api/devices", headers=headers, timeout=10)
    assert refused.status_code == 401
    assert refused.json() == {"error": "invalid or revoked token"}
    twice = users_cli(lab, "token", "revoke", token_id)
    assert twice.returncode == 1
    assert "already revoked" in twice.stderr
    assert users_cli(lab, "token", "revoke", "999999").returncode == 1


@pytest.mark.integration
def test_removing_a_user_revokes_their_tokens(lab: RunningLab) -> None:
    name = f"user-{uuid.uuid4().hex[:8]}"
    assert users_cli(lab, "add", name, "--password-stdin", stdin="a-good-password\n").returncode == 0
    token = api_token(lab, name)
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{lab.portal_url}/metrics", headers=headers, timeout=10).status_code == 200
    assert users_cli(lab, "remove", name).returncode == 0
    assert requests.get(f"{lab.portal_url}/metrics", headers=headers, timeout=10).status_code == 401


@pytest.mark.integration
def test_tokens_for_unknown_users_are_refused(lab: RunningLab) -> None:
    result = users_cli(lab, "token", "create", f"nobody-{uuid.uuid4().hex[:6]}")
    assert result.returncode == 1
    assert "no user" in result.stderr
