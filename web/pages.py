"""The portal's HTML pages."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from web.auth import current_user, login_required

bp = Blueprint("pages", __name__)


@bp.get("/")
@login_required
def index() -> str:
    """The live page: one row per room/device/attribute, updated as values are stored."""
    settings = current_app.extensions["portal"].settings
    return render_template("live.html", user=current_user(), topic_root=settings.topic_root)
