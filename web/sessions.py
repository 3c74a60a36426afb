"""Sign-in sessions kept by the server: a session ends when its user signs out, is removed, or
has their password changed, whatever the cookie still says.

The cookie (signed by Flask) carries a random secret; the ``sessions`` table holds its SHA-256
(see migration 0003). A request's session is valid while its row exists. Signing out deletes the
row; :meth:`web.accounts.Accounts.remove_user` and ``set_password`` delete every row of the user.

The administrator of ``.env`` can use the portal while the database is down (to see what is
wrong). So this process also remembers, in memory and bounded, the administrator sessions it
opened while the database was down (stored as soon as it is back) and the sessions it ended
(refused here at once, deleted from the database as soon as it answers). While the database is
down, an administrator session this process has not seen end is trusted; any other is refused.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import timedelta

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from web.periodic import Periodic
from web.schema import sessions

log = logging.getLogger(__name__)

#: A session unused this long is over (and its row deleted by :meth:`Sessions.sweep`).
IDLE_S = 7 * 24 * 3600
#: ``last_seen_at`` is written at most this often per session.
TOUCH_S = 60
#: Most sessions remembered in memory (opened or ended while the database was down).
MEMORY_MAX = 10_000


def session_hash(secret: str) -> str:
    """The stored form of a session secret (hex SHA-256: secrets are random, no salt needed)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class Sessions:
    """The server side of sign-in sessions. Safe to call from any thread.

    Args:
        engine: the lab database.
        admin_user: the administrator's name, whose sessions work without the database.
    """

    def __init__(self, engine: Engine, admin_user: str) -> None:
        self.engine = engine
        self.admin_user = admin_user
        self._lock = threading.Lock()
        self._unsaved: OrderedDict[str, str] = OrderedDict()  # hash -> user, opened with the database down
        self._ended: OrderedDict[str, str] = OrderedDict()  # hashes ended here, maybe not yet in the database

    def open(self, user: str) -> str:
        """Start a session for `user`; returns the secret the cookie carries.

        Raises:
            SQLAlchemyError: the database is down and `user` is not the administrator.
        """
        secret = secrets.token_urlsafe(32)
        digest = session_hash(secret)
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(sessions).values(id_hash=digest, user_name=user))
        except SQLAlchemyError:
            if user != self.admin_user:
                raise
            log.warning("session of %s kept in memory until the database is back", user)
            with self._lock:
                _remember(self._unsaved, digest, user)
        return secret

    def valid(self, secret: str, user: str) -> bool:
        """True while the session of `secret` is open and belongs to `user`."""
        digest = session_hash(secret)
        with self._lock:
            if digest in self._ended:
                return False
            unsaved = self._unsaved.get(digest)
        try:
            with self.engine.begin() as connection:
                row = connection.execute(
                    select(sessions.c.user_name, sessions.c.last_seen_at, func.now()).where(
                        sessions.c.id_hash == digest
                    )
                ).one_or_none()
                if row is None and unsaved is not None:
                    connection.execute(insert(sessions).values(id_hash=digest, user_name=unsaved))
                    with self._lock:
                        self._unsaved.pop(digest, None)
                    return unsaved == user
                if row is None:
                    return False
                owner, last_seen, now = row
                if owner != user or now - last_seen > timedelta(seconds=IDLE_S):
                    return False
                if now - last_seen > timedelta(seconds=TOUCH_S):
                    connection.execute(
                        update(sessions).where(sessions.c.id_hash == digest).values(last_seen_at=now)
                    )
        except SQLAlchemyError:
            return user == self.admin_user  # not ended here (checked above): the administrator goes on
        return True

    def end(self, secret: str) -> str:
        """End one session (signing out); returns its hash. Refused here at once, whatever the database."""
        digest = session_hash(secret)
        with self._lock:
            self._unsaved.pop(digest, None)
            _remember(self._ended, digest, "")
        self._forget([digest])
        return digest

    def alive(self, digests: Iterable[str]) -> set[str] | None:
        """Which of these session hashes are still open; None when the database cannot tell."""
        wanted = set(digests)
        with self._lock:
            wanted -= set(self._ended)
            unsaved = wanted & set(self._unsaved)
        if not wanted:
            return set()
        try:
            with self.engine.connect() as connection:
                found = connection.execute(
                    select(sessions.c.id_hash).where(sessions.c.id_hash.in_(wanted - unsaved))
                ).scalars()
                return set(found) | unsaved
        except SQLAlchemyError:
            return None

    def sweep(self) -> None:
        """Delete idle sessions, and the ended ones the database could not take before."""
        with self._lock:
            pending = list(self._ended)
        self._forget(pending)
        try:
            with self.engine.begin() as connection:
                gone = connection.execute(
                    delete(sessions).where(sessions.c.last_seen_at < func.now() - timedelta(seconds=IDLE_S))
                ).rowcount
        except SQLAlchemyError:
            return
        if gone:
            log.info("%s idle sessions ended", gone)

    def _forget(self, digests: list[str]) -> None:
        if not digests:
            return
        try:
            with self.engine.begin() as connection:
                connection.execute(delete(sessions).where(sessions.c.id_hash.in_(digests)))
        except SQLAlchemyError:
            log.warning("ended sessions stay refused in memory until the database is back")
            return
        with self._lock:
            for digest in digests:
                self._ended.pop(digest, None)


def _remember(memory: OrderedDict[str, str], key: str, value: str) -> None:
    memory[key] = value
    while len(memory) > MEMORY_MAX:
        memory.popitem(last=False)


class SessionKeeper(Periodic):
    """Runs `check` every `interval_s` seconds (until :meth:`stop`).

    The portal's check drops live clients whose session or token has ended elsewhere (another
    process signed them out, the user was removed or changed their password, a token was
    revoked) and deletes idle sessions.
    """

    def __init__(self, check: Callable[[], None], interval_s: float = 10.0) -> None:
        super().__init__("portal-sessions", check, interval_s)
