"""The portal's HTML pages: server-rendered shells that their scripts fill over Socket.IO and the API.

* ``/``: the overview, rooms, then devices, then one live tile per attribute;
* ``/device/<room>/<device>``: one device, a live chart per numeric attribute and its history;
* ``/alarms``: alarms with acknowledge and clear.

Names from topics reach the templates only as autoescaped text and ``data-`` attributes.
"""

from __future__ import annotations

from flask import Blueprint, abort, render_template

from web.auth import current_user, login_required
from web.portal import current_portal
from web.settings import Settings
from wire.names import is_valid_name

bp = Blueprint("pages", __name__)


def _render(template: str, page: str, **context: object) -> str:
    settings: Settings = current_portal().settings
    return render_template(
        template,
        user=current_user(),
        page=page,
        topic_root=settings.topic_root,
        offline_after_s=settings.portal_offline_after_s,
        **context,
    )


@bp.get("/")
@login_required
def index() -> str:
    """The overview: every room, device and attribute, updated live."""
    return _render("live.html", "overview")


@bp.get("/device/<room>/<device>")
@login_required
def device(room: str, device: str) -> str:
    """One device's attributes: live charts, history with a range picker, recent text values."""
    if not (is_valid_name(room) and is_valid_name(device)):
        abort(404)
    return _render("device.html", "device", room=room, device=device)


@bp.get("/alarms")
@login_required
def alarms() -> str:
    """Alarms raised by the rules, live, with acknowledge and clear."""
    return _render("alarms.html", "alarms")
