"""The dashboard's Flask-SocketIO app: one page, pushed updates, controls relayed to the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, render_template
from flask_socketio import SocketIO

from stress.dashboard.feed import Feed

#: What the page may ask of a run (the run checks every value itself).
CONTROL_OPS = frozenset({"stop", "pause", "resume", "scale", "rate", "status"})


def create_app(runs_root: Path, run: str | None = None) -> tuple[Flask, SocketIO, Feed]:
    """The app, its Socket.IO server, and the feed (started by the caller)."""
    from web import vendor  # noqa: PLC0415 - the portal's allow-listed browser libraries

    app = Flask(__name__)
    app.register_blueprint(vendor.bp)
    socketio = SocketIO(app, async_mode="threading", logger=False, engineio_logger=False)
    feed = Feed(socketio.emit, runs_root, run)

    @app.get("/")
    def page() -> str:
        return render_template("dashboard.html")

    @app.get("/healthz")
    def health() -> dict[str, Any]:
        return {"ok": True, "live": feed.live is not None}

    def connected(_auth: Any = None) -> None:
        socketio.emit("state", feed.state(), to=_sid())

    def control(request: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or request.get("op") not in CONTROL_OPS:
            return {"ok": False, "error": f"unknown control (one of {', '.join(sorted(CONTROL_OPS))})"}
        return feed.control(request)

    socketio.on_event("connect", connected)
    socketio.on_event("control", control)
    return app, socketio, feed


def _sid() -> str:
    from flask import request  # noqa: PLC0415

    sid: str = request.sid  # type: ignore[attr-defined]
    return sid
