"""Browser libraries installed from npm (``web/assets``) and served by the portal itself.

No CDN: ``npm ci`` in ``web/assets`` installs the pinned versions from ``package-lock.json`` and
this blueprint serves only the allow-listed files below, never the rest of ``node_modules``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Blueprint, abort, send_file
from flask.typing import ResponseReturnValue

log = logging.getLogger(__name__)

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
#: URL file name -> path under web/assets.
ALLOWED = {
    "socket.io.min.js": Path("node_modules/socket.io-client/dist/socket.io.min.js"),
    "uPlot.iife.min.js": Path("node_modules/uplot/dist/uPlot.iife.min.js"),
    "uPlot.min.css": Path("node_modules/uplot/dist/uPlot.min.css"),
}
_MIMETYPES = {".js": "text/javascript", ".css": "text/css"}

bp = Blueprint("vendor", __name__, url_prefix="/static/vendor")


def missing_files() -> list[Path]:
    """Allow-listed files that are not installed."""
    return [ASSETS_DIR / relative for relative in ALLOWED.values() if not (ASSETS_DIR / relative).is_file()]


def check_installed() -> None:
    """Log one clear error per missing file, with the command that installs it."""
    for path in missing_files():
        log.error("browser library missing: %s - run `npm ci` in %s", path, ASSETS_DIR)


@bp.get("/<name>")
def vendor_file(name: str) -> ResponseReturnValue:
    """Serve one allow-listed file."""
    relative = ALLOWED.get(name)
    if relative is None:
        abort(404)
    path = ASSETS_DIR / relative
    if not path.is_file():
        log.error("browser library missing: %s - run `npm ci` in %s", path, ASSETS_DIR)
        abort(404)
    return send_file(path, mimetype=_MIMETYPES[path.suffix], max_age=3600)
