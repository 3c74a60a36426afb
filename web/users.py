"""The command line that manages portal users and API tokens (see :mod:`web.accounts`).

Reads ``POSTGRES_*`` and ``PORTAL_ADMIN_USER`` like the portal, from the environment or ``.env``::

    python -m web.users add NAME [--password-stdin]
    python -m web.users list
    python -m web.users remove NAME
    python -m web.users passwd NAME [--password-stdin]
    python -m web.users token create NAME [--label LABEL]
    python -m web.users token list
    python -m web.users token revoke ID

Errors are one line on stderr with a non-zero exit status (``--debug`` adds the traceback).
"""

from __future__ import annotations

import argparse
import getpass
import sys
import traceback
from collections.abc import Sequence
from datetime import datetime

from pydantic import Field
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError

from web.accounts import AccountError, Accounts, check_new_password, unknown_user
from web.db_errors import first_line
from web.settings import DatabaseSettings, SettingsError


class AccountSettings(DatabaseSettings):
    """What the command line reads: the database, and the administrator's name."""

    portal_admin_user: str = Field(default="admin", min_length=1)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m web.users`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m web.users",
        description=(
            "Manage portal users and API tokens. Reads POSTGRES_HOST, POSTGRES_PORT, "
            "POSTGRES_PASSWORD and PORTAL_ADMIN_USER from the environment or ./.env. "
            "The administrator of .env always exists and needs no account."
        ),
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add = commands.add_parser("add", help="create a user (asks for the password)")
    add.add_argument("name", help="user name: 1-64 letters, digits or . _ @ -")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    commands.add_parser("list", help="list users")
    remove = commands.add_parser("remove", help="delete a user, end their sessions and revoke their tokens")
    remove.add_argument("name")
    passwd = commands.add_parser("passwd", help="change a user's password (ends their sessions)")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from stdin")

    token = commands.add_parser("token", help="manage API bearer tokens")
    token_commands = token.add_subparsers(dest="tokens", required=True, metavar="TOKEN_COMMAND")
    create = token_commands.add_parser("create", help="create a token for a user; prints it once")
    create.add_argument("name", help="the user the token acts as (a user or the administrator)")
    create.add_argument("--label", help="what the token is for, e.g. 'grafana'")
    token_commands.add_parser("list", help="list tokens (never the tokens themselves)")
    revoke = token_commands.add_parser("revoke", help="revoke a token at once")
    revoke.add_argument("id", type=int, help="the token's id, from `token list`")
    return parser


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
        if not password:
            raise AccountError("no password on stdin")
        return password
    if not sys.stdin.isatty():
        raise AccountError("no terminal to ask for a password: pass it with --password-stdin")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != password:
        raise AccountError("the two passwords differ; nothing changed")
    return password


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _print_rows(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        _out("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def run(accounts: Accounts, args: argparse.Namespace) -> None:
    """Carry out one parsed command (the command line minus settings and error handling)."""
    if args.command == "add":
        password = check_new_password(_read_password(args.password_stdin))
        accounts.add_user(args.name, password)
        _tell(f"user {args.name} added")
    elif args.command == "list":
        rows = [["NAME", "CREATED", "PASSWORD CHANGED"]]
        rows += [[u.name, _when(u.created_at), _when(u.password_changed_at)] for u in accounts.users()]
        _print_rows(rows)
    elif args.command == "remove":
        revoked = accounts.remove_user(args.name)
        _tell(f"user {args.name} removed; {revoked} token(s) revoked")
    elif args.command == "passwd":
        if accounts.password_hash(args.name) is None:
            raise unknown_user(args.name)  # asked before prompting for the new password
        accounts.set_password(args.name, check_new_password(_read_password(args.password_stdin)))
        _tell(f"password of {args.name} changed")
    elif args.tokens == "create":
        token = accounts.create_token(args.name, args.label)
        _out(token.secret)
        _tell(f"token {token.id} for {token.user}: store it now, it is not shown again")
    elif args.tokens == "list":
        rows = [["ID", "USER", "LABEL", "CREATED", "LAST USED", "STATUS"]]
        rows += [
            [
                str(t.id),
                t.user,
                t.label or "-",
                _when(t.created_at),
                _when(t.last_used_at),
                "active" if t.revoked_at is None else f"revoked {_when(t.revoked_at)}",
            ]
            for t in accounts.tokens()
        ]
        _print_rows(rows)
    else:
        accounts.revoke_token(args.id)
        _tell(f"token {args.id} revoked")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m web.users``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        settings = AccountSettings.from_env()
    except SettingsError as exc:
        _tell(f"error: {exc}")
        return 2
    engine = create_engine(settings.database_url, connect_args={"connect_timeout": 3})
    try:
        run(Accounts(engine, settings.portal_admin_user), args)
    except (AccountError, SQLAlchemyError, KeyboardInterrupt) as exc:
        if args.debug:
            traceback.print_exc()
        _tell(f"error: {_explain(exc, settings)}")
        return 1
    finally:
        engine.dispose()
    return 0


def _explain(exc: BaseException, settings: AccountSettings) -> str:
    if isinstance(exc, OperationalError):
        where = f"{settings.postgres_host}:{settings.postgres_port}"
        return f"cannot reach the database at {where} ({first_line(exc)}): is the lab running (./lab up)?"
    if isinstance(exc, ProgrammingError):
        return f"database not ready ({first_line(exc)}): run ./lab up to apply the migrations"
    if isinstance(exc, SQLAlchemyError):
        return f"database error: {first_line(exc)}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted; nothing changed"
    return str(exc)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _tell(text: str) -> None:
    sys.stderr.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
