"""Portal accounts and API tokens in the lab database.

The administrator (``PORTAL_ADMIN_USER`` / ``PORTAL_ADMIN_PASSWORD`` in ``.env``) always exists and
is never stored. Further users live in the ``users`` table with a salted scrypt hash of their
password (memory-hard, standard library, no native build). API clients authenticate with bearer
tokens: random strings shown once at creation; only their SHA-256 is stored, so a leaked database
does not leak usable tokens. Tokens can be revoked; removing a user revokes theirs.
``python -m web.users`` (:mod:`web.users`) manages both from the command line.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from web.errors import PortalError
from web.schema import api_tokens, sessions, users

log = logging.getLogger(__name__)

#: scrypt cost: 2**14 x 8 x 128 bytes = 16 MiB of memory and some tens of ms per check.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_KEY_BYTES = 32
MIN_PASSWORD_LENGTH = 8
#: Longer inputs are refused before hashing (a login form must not be a hashing service).
MAX_PASSWORD_LENGTH = 1024
NAME_PATTERN = re.compile(r"[A-Za-z0-9._@-]{1,64}")
MAX_LABEL_LENGTH = 100
TOKEN_PREFIX = "lab_"  # noqa: S105 - a public marker of lab tokens, not a secret
MAX_TOKEN_LENGTH = 200
#: ``last_used_at`` of a token is written at most this often (not on every request).
TOKEN_TOUCH_S = 60


class AccountError(PortalError, ValueError):
    """A request about users or tokens that cannot be done; the message says why, in one line."""


# -- secrets ------------------------------------------------------------------------------


def hash_password(password: str) -> str:
    """A salted scrypt hash: ``scrypt$<n>$<r>$<p>$<salt b64>$<key b64>``."""
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(
        ["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(key)],
    )


def verify_password(password: str, stored: str) -> bool:
    """True when `password` hashes to `stored` (constant-time comparison); False on any malformed hash."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key, validate=True)
        actual = _scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(actual, expected)


def burn_password_check(password: str) -> None:
    """Spend the time of one real check, so unknown user names answer as slowly as known ones."""
    verify_password(password, _dummy_hash())


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=64 * 1024 * 1024,
        dklen=_KEY_BYTES,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def token_digest(token: str) -> str:
    """The stored form of a bearer token (hex SHA-256; tokens are random, so no salt is needed)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_name(name: str) -> str:
    """`name` if it is a valid user name (1-64 of ``A-Z a-z 0-9 . _ @ -``), else AccountError."""
    if not NAME_PATTERN.fullmatch(name):
        raise AccountError(
            f"invalid user name {name[:70]!r}: use 1-64 letters, digits or . _ @ - (no spaces)"
        )
    return name


def check_new_password(password: str) -> str:
    """`password` if it is acceptable for a new account, else AccountError."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password too short: use at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"password too long: use at most {MAX_PASSWORD_LENGTH} characters")
    return password


def unknown_user(name: str) -> AccountError:
    """The error for a user name that has no account."""
    return AccountError(f"no user {name[:70]!r} (see `list`)")


# -- the store ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class User:
    """A stored portal account (never the administrator of ``.env``)."""

    name: str
    created_at: datetime
    password_changed_at: datetime


@dataclass(frozen=True, slots=True)
class Token:
    """A bearer token's record (the token itself is not kept)."""

    id: int
    user: str
    label: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewToken:
    """A token just created: `secret` is the only copy there will ever be."""

    id: int
    user: str
    label: str | None
    secret: str


class Accounts:
    """Users and API tokens in the lab database.

    Args:
        engine: the database.
        admin_user: the administrator's name (from ``.env``); it has no row but may own tokens.
    """

    def __init__(self, engine: Engine, admin_user: str) -> None:
        self.engine = engine
        self.admin_user = admin_user

    # users

    def add_user(self, name: str, password: str) -> User:
        """Create an account. Raises AccountError for a bad or taken name or a weak password."""
        check_name(name)
        if name == self.admin_user:
            raise AccountError(f"{name!r} is the administrator (PORTAL_ADMIN_USER): it needs no account")
        password_hash = hash_password(check_new_password(password))
        try:
            with self.engine.begin() as connection:
                row = connection.execute(
                    insert(users)
                    .values(name=name, password_hash=password_hash)
                    .returning(users.c.name, users.c.created_at, users.c.password_changed_at)
                ).one()
        except IntegrityError:
            raise AccountError(f"user {name!r} already exists") from None
        return User(*row)

    def set_password(self, name: str, password: str) -> None:
        """Change a user's password (which also ends their open sessions)."""
        password_hash = hash_password(check_new_password(password))
        with self.engine.begin() as connection:
            done = connection.execute(
                update(users)
                .where(users.c.name == name)
                .values(password_hash=password_hash, password_changed_at=func.now())
            ).rowcount
            connection.execute(delete(sessions).where(sessions.c.user_name == name))
        if not done:
            raise unknown_user(name)

    def remove_user(self, name: str) -> int:
        """Delete an account, end its sessions and revoke its tokens; returns how many tokens were revoked."""
        with self.engine.begin() as connection:
            gone = connection.execute(delete(users).where(users.c.name == name)).rowcount
            if not gone:
                raise unknown_user(name)
            connection.execute(delete(sessions).where(sessions.c.user_name == name))
            return connection.execute(
                update(api_tokens)
                .where(api_tokens.c.user_name == name, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=func.now())
            ).rowcount

    def users(self) -> list[User]:
        """Every stored account, by name."""
        query = select(users.c.name, users.c.created_at, users.c.password_changed_at).order_by(users.c.name)
        with self.engine.connect() as connection:
            return [User(*row) for row in connection.execute(query)]

    def verify(self, name: str, password: str) -> str | None:
        """The stored hash of `name` if `password` is theirs, else None (same time either way)."""
        stored = self.password_hash(name)
        if stored is None:
            burn_password_check(password)
            return None
        return stored if verify_password(password, stored) else None

    def password_hash(self, name: str) -> str | None:
        """The stored hash of a user's password, or None for an unknown user."""
        if not NAME_PATTERN.fullmatch(name):
            return None
        with self.engine.connect() as connection:
            stored: str | None = connection.execute(
                select(users.c.password_hash).where(users.c.name == name)
            ).scalar_one_or_none()
        return stored

    # tokens

    def create_token(self, user: str, label: str | None = None) -> NewToken:
        """Create a bearer token for `user` (a stored user or the administrator)."""
        if label is not None and (len(label) > MAX_LABEL_LENGTH or not label.isprintable()):
            raise AccountError(f"label must be at most {MAX_LABEL_LENGTH} printable characters")
        if user != self.admin_user and self.password_hash(user) is None:
            raise unknown_user(user)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.engine.begin() as connection:
            token_id = connection.execute(
                insert(api_tokens)
                .values(user_name=user, label=label, token_hash=token_digest(secret))
                .returning(api_tokens.c.id)
            ).scalar_one()
        return NewToken(token_id, user, label, secret)

    def tokens(self) -> list[Token]:
        """Every token record, oldest first."""
        query = select(
            api_tokens.c.id,
            api_tokens.c.user_name,
            api_tokens.c.label,
            api_tokens.c.created_at,
            api_tokens.c.last_used_at,
            api_tokens.c.revoked_at,
        ).order_by(api_tokens.c.id)
        with self.engine.connect() as connection:
            return [Token(*row) for row in connection.execute(query)]

    def revoke_token(self, token_id: int) -> None:
        """Revoke a token at once; AccountError if there is no such token or it is already revoked."""
        with self.engine.begin() as connection:
            state = connection.execute(
                select(api_tokens.c.revoked_at).where(api_tokens.c.id == token_id)
            ).one_or_none()
            if state is None:
                raise AccountError(f"no token with id {token_id} (see `token list`)")
            if state[0] is not None:
                raise AccountError(f"token {token_id} is already revoked")
            connection.execute(
                update(api_tokens).where(api_tokens.c.id == token_id).values(revoked_at=func.now())
            )

    def live_tokens(self, digests: set[str]) -> set[str]:
        """Which of these token digests still authenticate (not revoked, their user still there)."""
        if not digests:
            return set()
        query = (
            select(api_tokens.c.token_hash, api_tokens.c.user_name, users.c.name)
            .select_from(api_tokens.outerjoin(users, users.c.name == api_tokens.c.user_name))
            .where(api_tokens.c.token_hash.in_(digests), api_tokens.c.revoked_at.is_(None))
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return {digest for digest, owner, stored in rows if stored is not None or owner == self.admin_user}

    def user_for_token(self, secret: str) -> str | None:
        """The user a live token belongs to, or None (unknown, revoked, or its user is gone)."""
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > MAX_TOKEN_LENGTH:
            return None
        query = (
            select(api_tokens.c.id, api_tokens.c.user_name, api_tokens.c.last_used_at, users.c.name)
            .select_from(api_tokens.outerjoin(users, users.c.name == api_tokens.c.user_name))
            .where(api_tokens.c.token_hash == token_digest(secret), api_tokens.c.revoked_at.is_(None))
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).one_or_none()
            if row is None:
                return None
            token_id, owner, last_used, stored_user = row
            if stored_user is None and owner != self.admin_user:
                return None
            fresh = connection.execute(select(func.now())).scalar_one()
            if last_used is None or (fresh - last_used).total_seconds() >= TOKEN_TOUCH_S:
                connection.execute(
                    update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=fresh)
                )
                connection.commit()
        return str(owner)
