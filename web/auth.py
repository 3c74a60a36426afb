"""Who may use the portal: sign-in sessions, CSRF tokens, bearer tokens, and login throttling.

* **Users**: the administrator of ``.env`` (``PORTAL_ADMIN_USER`` / ``PORTAL_ADMIN_PASSWORD``,
  never stored, works even with the database down) and the accounts of :mod:`web.accounts`
  (managed with ``python -m web.users``).
* **Sessions** (browsers): a signed Flask cookie holding the user name, a keyed fingerprint of
  the credential it was opened with, and the secret of a session the server keeps
  (:mod:`web.sessions`). Signing out, removing a user or changing their password ends the
  session on the server: the old cookie no longer reads the API nor opens Socket.IO, and live
  connections of that session are closed. :func:`login_required` guards pages,
  :func:`current_user` tells any handler who is signed in.
* **CSRF**: a random token per session, rendered by templates as ``{{ csrf_token() }}`` (the login
  form's hidden field, and ``<meta name="csrf-token">`` for scripts). Sign-in forms must send it
  back as ``csrf_token``; session-authenticated state-changing API calls as ``X-CSRF-Token``.
* **Bearer tokens** (API clients, ``Authorization: Bearer <token>``): no cookie, so no CSRF.
  :func:`api_login_required` accepts either and answers 401/403 in JSON.
* **Throttling**: at most :data:`MAX_LOGIN_FAILURES` failed sign-ins per user name and client
  address, and :data:`MAX_ADDRESS_FAILURES` per client address whatever the names, per
  :data:`LOGIN_WINDOW_S`; then 429 with ``Retry-After`` (in memory, per process). Never per user
  name alone: failures from one address cannot lock the owner out from another.
"""

from __future__ import annotations

import functools
import hmac
import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers.response import Response as WerkzeugResponse

from web.accounts import MAX_PASSWORD_LENGTH, Accounts, burn_password_check
from web.db_errors import first_line
from web.sessions import Sessions, session_hash
from web.settings import Settings

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)

MAX_LOGIN_FAILURES = 5
#: Failed sign-ins from one address, whatever the user names (a password sprayed over many names).
MAX_ADDRESS_FAILURES = 20
LOGIN_WINDOW_S = 60.0
#: Longest user name looked at; longer ones are wrong names (and are not kept in memory whole).
MAX_USERNAME_LENGTH = 200
CSRF_FORM_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_USER_KEY = "user"
_CREDENTIAL_KEY = "cred"
_SESSION_KEY = "sid"
_CSRF_KEY = "csrf"
P = ParamSpec("P")
R = TypeVar("R")


class LoginThrottle:
    """Counts failed sign-ins per key (user name, client address) in a sliding window.

    Memory is bounded: past ``max_keys`` keys, expired ones are dropped, then the oldest.
    """

    def __init__(
        self,
        max_failures: int = MAX_LOGIN_FAILURES,
        window_s: float = LOGIN_WINDOW_S,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_keys = max_keys
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def retry_after(self, key: tuple[str, str]) -> int:
        """0 if `key` may try now, else the whole seconds until it may."""
        now = self.clock()
        with self._lock:
            failures = self._failures.get(key)
            if failures is None:
                return 0
            self._expire(failures, now)
            if len(failures) < self.max_failures:
                return 0
            return max(1, math.ceil(failures[0] + self.window_s - now))

    def failed(self, key: tuple[str, str]) -> None:
        """Record one failed attempt."""
        now = self.clock()
        with self._lock:
            failures = self._failures.setdefault(key, deque(maxlen=self.max_failures))
            failures.append(now)
            if len(self._failures) > self.max_keys:
                self._shrink(now)

    def succeeded(self, key: tuple[str, str]) -> None:
        """Forget the failures of `key` after a successful sign-in."""
        with self._lock:
            self._failures.pop(key, None)

    def _expire(self, failures: deque[float], now: float) -> None:
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()

    def _shrink(self, now: float) -> None:
        for key in list(self._failures):
            self._expire(self._failures[key], now)
            if not self._failures[key]:
                del self._failures[key]
        excess = len(self._failures) - self.max_keys
        for key in list(self._failures)[: max(0, excess)]:
            del self._failures[key]


@dataclass
class AuthState:
    """Per-app authentication parts, at ``app.extensions["auth"]``."""

    settings: Settings
    accounts: Accounts
    sessions: Sessions
    throttle: LoginThrottle  # keyed by (user name, address)
    address_throttle: LoginThrottle  # keyed by ("", address)
    #: Called with a session's hash when it is signed out here (live connections close).
    on_sign_out: list[Callable[[str], object]] = field(default_factory=list)


def init_app(app: Flask, settings: Settings, engine: Engine) -> AuthState:
    """Bind accounts, sessions and throttling to `app`, and the ``csrf_token()`` template function."""
    state = AuthState(
        settings,
        Accounts(engine, settings.portal_admin_user),
        Sessions(engine, settings.portal_admin_user),
        LoginThrottle(),
        LoginThrottle(max_failures=MAX_ADDRESS_FAILURES),
    )
    app.extensions["auth"] = state
    app.context_processor(lambda: {"csrf_token": csrf_token})
    app.register_blueprint(bp)
    return state


def _state() -> AuthState:
    state: AuthState = current_app.extensions["auth"]
    return state


# -- credentials --------------------------------------------------------------------------


def _fingerprint(credential: str) -> str:
    """Keyed digest of a credential: the session cookie is signed, not encrypted."""
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, credential.encode("utf-8", "surrogatepass"), "sha256").hexdigest()[:32]


def _admin_credential(settings: Settings) -> str:
    return "admin:" + settings.portal_admin_password.get_secret_value()


def authenticate(username: str, password: str) -> str | None:
    """The session fingerprint if the pair is right, else None.

    The administrator is checked first, without the database; other names against stored
    hashes, taking the same time for unknown names. Raises SQLAlchemyError if the database is down.
    """
    settings = _state().settings
    if len(password) > MAX_PASSWORD_LENGTH:
        return None
    if hmac.compare_digest(username.encode(), settings.portal_admin_user.encode()):
        expected = settings.portal_admin_password.get_secret_value()
        if hmac.compare_digest(password.encode("utf-8", "surrogatepass"), expected.encode()):
            return _fingerprint(_admin_credential(settings))
        burn_password_check(password)
        return None
    stored = _state().accounts.verify(username, password)
    return None if stored is None else _fingerprint(stored)


def current_user() -> str | None:
    """The signed-in user's name, or ``None`` (also when their password changed or they were removed)."""
    if "_auth_user" in g:
        cached: str | None = g._auth_user
        return cached
    g._auth_user = user = _session_user()
    return user


def current_session() -> str | None:
    """The hash of the signed-in session of this request (see :mod:`web.sessions`), or ``None``."""
    secret = session.get(_SESSION_KEY)
    return session_hash(secret) if isinstance(secret, str) and current_user() is not None else None


def _session_user() -> str | None:
    user, credential = session.get(_USER_KEY), session.get(_CREDENTIAL_KEY)
    secret = session.get(_SESSION_KEY)
    if not isinstance(user, str) or not isinstance(credential, str) or not isinstance(secret, str):
        return None
    state = _state()
    if user == state.settings.portal_admin_user:
        expected = _fingerprint(_admin_credential(state.settings))
    else:
        try:
            stored = state.accounts.password_hash(user)
        except SQLAlchemyError as exc:
            log.error("cannot check the session of %s, database unavailable: %s", user, first_line(exc))
            return None
        if stored is None:
            return None
        expected = _fingerprint(stored)
    if not hmac.compare_digest(credential, expected):
        return None
    return user if state.sessions.valid(secret, user) else None


def csrf_token() -> str:
    """This session's CSRF token (created on first use)."""
    token = session.get(_CSRF_KEY)
    if not isinstance(token, str):
        token = session[_CSRF_KEY] = secrets.token_urlsafe(32)
    return token


def csrf_valid(sent: str | None) -> bool:
    """True when `sent` is this session's CSRF token."""
    expected = session.get(_CSRF_KEY)
    if not isinstance(expected, str) or not sent:
        return False
    return hmac.compare_digest(sent.encode("utf-8", "surrogatepass"), expected.encode())


def bearer_token(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def token_user(token: str) -> str | None:
    """The user of a bearer token, or None (also when the database cannot be asked).

    For Socket.IO connections (``auth={"token": ...}``), where an error must mean "refused".
    """
    try:
        return _state().accounts.user_for_token(token)
    except SQLAlchemyError as exc:
        log.error("cannot check a bearer token, database unavailable: %s", first_line(exc))
        return None


# -- guards -------------------------------------------------------------------------------


def login_required(view: Callable[P, R]) -> Callable[P, R | WerkzeugResponse]:
    """Redirect to the sign-in page (and back afterwards) when nobody is signed in."""

    @functools.wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R | WerkzeugResponse:
        if current_user() is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped


def _json_error(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="lab portal"'
    return response


def api_login_required(view: Callable[P, R]) -> Callable[P, R | Response]:
    """Require a bearer token or a session (plus ``X-CSRF-Token`` on state-changing methods).

    The user is then in ``g.api_user``. A request that sends ``Authorization`` is judged by it
    alone. Database errors while checking a token propagate (the API answers 503).
    """

    @functools.wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R | Response:
        header = request.headers.get("Authorization")
        if header is not None:
            token = bearer_token(header)
            if token is None:
                return _json_error(401, "Authorization header must be 'Bearer <token>'")
            user = _state().accounts.user_for_token(token)
            if user is None:
                return _json_error(401, "invalid or revoked token")
        else:
            user = current_user()
            if user is None:
                return _json_error(401, "not signed in: sign in, or send 'Authorization: Bearer <token>'")
            if request.method not in SAFE_METHODS and not csrf_valid(request.headers.get(CSRF_HEADER)):
                return _json_error(403, f"missing or wrong {CSRF_HEADER} header (see <meta name=csrf-token>)")
        g.api_user = user
        return view(*args, **kwargs)

    return wrapped


# -- pages --------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """Only same-site paths are followed after sign-in (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("pages.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return url_for("pages.index")
    return target


def _login_page(next_url: str | None, error: str | None, status: int = 200) -> tuple[str, int]:
    return render_template("login.html", next=next_url, error=error), status


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Show the sign-in form; on POST check the CSRF token, the throttle and the credentials."""
    next_url = request.values.get("next")
    if request.method == "GET":
        return _login_page(next_url, None)
    if not csrf_valid(request.form.get(CSRF_FORM_FIELD)):
        log.warning("sign-in refused: missing or stale form token remote=%s", request.remote_addr)
        return _login_page(next_url, "The sign-in form had expired. Please sign in again.", 400)
    username = request.form.get("username", "")[:MAX_USERNAME_LENGTH]
    password = request.form.get("password", "")
    address = request.remote_addr or ""
    key, address_key = (username, address), ("", address)
    state = _state()
    wait = max(state.throttle.retry_after(key), state.address_throttle.retry_after(address_key))
    if wait:
        log.warning("sign-in throttled user=%.60r remote=%s", username, request.remote_addr)
        body, status = _login_page(next_url, f"Too many failed sign-ins. Try again in {wait} s.", 429)
        return body, status, {"Retry-After": str(wait)}
    try:
        credential = authenticate(username, password)
        if credential is not None:
            _start_session(username, credential)
    except SQLAlchemyError as exc:
        log.error("sign-in of %.60r impossible, database unavailable: %s", username, first_line(exc))
        return _login_page(next_url, "Sign-in is unavailable (user database unreachable).", 503)
    if credential is None:
        state.throttle.failed(key)
        state.address_throttle.failed(address_key)
        log.warning("sign-in refused user=%.60r remote=%s", username, request.remote_addr)
        return _login_page(next_url, "Wrong user name or password.", 401)
    state.throttle.succeeded(key)
    log.info("signed in user=%s remote=%s", username, request.remote_addr)
    return redirect(_safe_next(next_url))


def _start_session(username: str, credential: str) -> None:
    """A fresh session on sign-in: nothing carried over, a new CSRF token.

    Raises:
        SQLAlchemyError: the session cannot be stored (and the user is not the administrator).
    """
    secret = _state().sessions.open(username)
    session.clear()
    session[_USER_KEY] = username
    session[_CREDENTIAL_KEY] = credential
    session[_SESSION_KEY] = secret


@bp.route("/logout", methods=["POST"])
def logout() -> WerkzeugResponse:
    """End the session (the form must carry the CSRF token, so other sites cannot sign users out)."""
    if not csrf_valid(request.form.get(CSRF_FORM_FIELD)):
        return redirect(url_for("pages.index"))
    secret = session.get(_SESSION_KEY)
    session.clear()
    if isinstance(secret, str):
        state = _state()
        digest = state.sessions.end(secret)
        for hook in state.on_sign_out:
            hook(digest)
        log.info("signed out remote=%s", request.remote_addr)
    return redirect(url_for("auth.login"))
