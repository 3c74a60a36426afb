"""The dashboard's Flask-SocketIO app: one page, pushed updates, controls relayed to the run, and
the report of each finished run it shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, render_template
from flask_socketio import SocketIO

from stress.dashboard.feed import Feed
from stress.results.model import RunFileError

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

    @app.get("/report/<run_id>")
    def run_report(run_id: str) -> Response:
        folder = feed.folder_of(run_id)
        if folder is None:
            abort(404)
        try:
            page = report_page(folder)
        except RunFileError as exc:
            return Response(f"no report for run {run_id}: {exc}\n", status=404, mimetype="text/plain")
        return Response(page, mimetype="text/html")

    @app.get("/favicon.ico")
    def no_icon() -> Response:
        # A report opened from here has no icon of its own: the browser would log a 404
        return Response(status=204)

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


def report_page(folder: Path) -> str:
    """The run's ``report.html``: the one ``stress run`` or ``stress report`` wrote, when it is
    not older than the summary, else made now (and not written: the run's own command may be
    writing it at this moment)."""
    from stress.results.report.html import render_html  # noqa: PLC0415 - the report only when asked
    from stress.results.report.loading import load_run  # noqa: PLC0415

    written = folder / "report.html"
    summary = folder / "summary.json"
    try:
        if written.stat().st_mtime_ns >= summary.stat().st_mtime_ns:
            return written.read_text(encoding="utf-8")
    except OSError:
        pass
    return render_html(load_run(folder))


def _sid() -> str:
    from flask import request  # noqa: PLC0415

    sid: str = request.sid  # type: ignore[attr-defined]
    return sid
