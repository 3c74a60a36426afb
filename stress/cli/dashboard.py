"""``stress dashboard``, and the dashboard that ``stress run --dashboard`` starts beside a run."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from stress.cli.flags import port
from stress.results.runfolder import DEFAULT_ROOT

DEFAULT_PORT = 8089
#: What the page loads from :mod:`web.vendor` (see templates/dashboard.html).
BROWSER_LIBRARIES = ("socket.io.min.js",)
#: Seconds a dashboard beside a run has, once the run is over, to show its pages the summary.
ENDED_WAIT_S = 5.0
#: Seconds for the last messages to leave the dashboard's sockets once it has sent them.
FLUSH_S = 1.0


def add_parser(commands: Any) -> None:
    """``stress dashboard`` and its flags."""
    parser = commands.add_parser(
        "dashboard",
        help="show the run in progress live in a browser, with its controls (or the last run)",
        description="Serve the live dashboard: the run in progress (rates offered, written and "
        "acknowledged, what was observed end to end of the sampled devices, latency percentiles, "
        "connected devices against the fleet size in force, errors by reason, every change of the "
        "timeline, the generator's health, the slowest and failing devices), pushed to the browser "
        "as it runs, with controls to stop it, pause or resume devices, and scale the fleet or "
        "change its rate. With no run in progress it shows the last run folder whole, with its "
        "controls off and a link to its report. Ctrl-C stops it.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=port, default=DEFAULT_PORT, help="port to serve on")
    parser.add_argument(
        "--run",
        metavar="ID",
        default=None,
        help="watch only this run: its run id or PID (default: the run in progress)",
    )
    parser.add_argument(
        "--runs", type=Path, default=DEFAULT_ROOT, help="where run folders are (for the last run)"
    )


def command_dashboard(args: argparse.Namespace) -> int:
    """``stress dashboard``: serve until interrupted."""
    from stress.dashboard.app import create_app  # noqa: PLC0415 - Flask only when serving

    check_free(args.host, args.port)
    check_libraries()
    app, socketio, feed = create_app(args.runs, args.run)
    feed.start()
    logging.getLogger("werkzeug").setLevel(logging.CRITICAL)  # its request lines and dev-server notes
    print(
        f"stress dashboard: http://{args.host}:{args.port}/  (Ctrl-C stops it)", file=sys.stderr, flush=True
    )
    try:
        socketio.run(app, host=args.host, port=args.port, allow_unsafe_werkzeug=True, log_output=False)
    except KeyboardInterrupt:
        pass
    finally:
        feed.stop()
    return 0


def check_free(host: str, number: int, flag: str = "--port") -> None:
    """One clear line when the port is taken, before anything starts."""
    try:
        with socket.create_server((host, number)):
            pass
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise OSError(
            f"cannot serve the dashboard on {host}:{number}: {reason} (choose another {flag})"
        ) from None


def check_libraries() -> None:
    """One clear line when the browser libraries the page loads are not installed.

    They come from ``web/assets/node_modules`` (see :mod:`web.vendor`): a checkout has them
    after ``npm ci`` there, and a wheel built from such a checkout carries them.
    """
    from web import vendor  # noqa: PLC0415 - the portal's allow-listed browser libraries

    for name in BROWSER_LIBRARIES:
        path = vendor.ASSETS_DIR / vendor.ALLOWED[name]
        if not path.is_file():
            raise OSError(
                f"the dashboard's browser library {name} is missing ({path}): run `npm ci` in "
                "web/assets of the checkout (./lab up does), then install stress from it again"
            )


def beside_run(host: str, number: int, runs: Path) -> subprocess.Popen[bytes]:
    """A dashboard process watching this process's run (``stress run --dashboard``)."""
    check_free(host, number, "--dashboard-port")
    check_libraries()
    argv = [sys.executable, "-m", "stress", "dashboard", "--host", host, "--port", str(number)]
    argv += ["--run", str(os.getpid()), "--runs", str(runs)]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)


def close_beside(process: subprocess.Popen[bytes], host: str, number: int) -> None:
    """Stop the dashboard beside a run, once it has shown its pages that the run ended."""
    address = "127.0.0.1" if host in ("", "0.0.0.0") else host  # noqa: S104 - where it listens
    deadline = time.monotonic() + ENDED_WAIT_S
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{address}:{number}/healthz", timeout=2) as answer:
                if not json.load(answer)["live"]:
                    time.sleep(FLUSH_S)
                    break
        except (OSError, ValueError, KeyError):
            break
        time.sleep(0.05)
    process.terminate()
    process.wait(10)
