"""Sign-in for the portal: one administrator account, held in a signed Flask session cookie.

The account is ``PORTAL_ADMIN_USER`` / ``PORTAL_ADMIN_PASSWORD``. Credentials are checked with
constant-time comparisons. :func:`login_required` guards pages, :func:`current_user` tells any
handler (HTTP or Socket.IO) who is signed in. More users, CSRF tokens and API tokens plug in here.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar
from urllib.parse import urlsplit

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from werkzeug.wrappers.response import Response as WerkzeugResponse

from web.settings import Settings

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)

_USER_KEY = "user"
P = ParamSpec("P")
R = TypeVar("R")


def current_user() -> str | None:
    """The signed-in user's name, or ``None``."""
    user = session.get(_USER_KEY)
    return user if isinstance(user, str) else None


def login_required(view: Callable[P, R]) -> Callable[P, R | WerkzeugResponse]:
    """Redirect to the sign-in page (and back afterwards) when nobody is signed in."""

    @functools.wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R | WerkzeugResponse:
        if current_user() is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped


def check_credentials(settings: Settings, username: str, password: str) -> bool:
    """True when both match the administrator account; timing does not reveal which part differs."""
    user_ok = hmac.compare_digest(username.encode(), settings.portal_admin_user.encode())
    expected_password = settings.portal_admin_password.get_secret_value()
    password_ok = hmac.compare_digest(password.encode(), expected_password.encode())
    return user_ok and password_ok


def _safe_next(target: str | None) -> str:
    """Only same-site paths are followed after sign-in (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("pages.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return url_for("pages.index")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | WerkzeugResponse | tuple[str, int]:
    """Show the sign-in form; on POST check the credentials and start a session."""
    next_url = request.values.get("next")
    if request.method == "GET":
        return render_template("login.html", next=next_url, error=None)
    settings: Settings = current_app.extensions["portal"].settings
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    if not check_credentials(settings, username, password):
        log.warning("sign-in refused remote=%s", request.remote_addr)
        return render_template("login.html", next=next_url, error="Wrong user name or password."), 401
    session.clear()  # a fresh session on sign-in: nothing carried over from before
    session[_USER_KEY] = username
    log.info("signed in user=%s remote=%s", username, request.remote_addr)
    return redirect(_safe_next(next_url))


@bp.route("/logout", methods=["POST"])
def logout() -> WerkzeugResponse:
    """End the session."""
    session.clear()
    return redirect(url_for("auth.login"))
