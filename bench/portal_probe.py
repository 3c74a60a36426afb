"""What the benchmarks ask of a running portal: a signed-in session, its worker's memory, and the
live clients each of its processes holds."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from types import TracebackType

import requests
from benchlab import portal_urls

from labctl.config import LabConfig

#: The gauge of Socket.IO clients in a portal process's ``/metrics``.
_LIVE_CLIENTS = re.compile(r"^portal_live_clients ([0-9.e+]+)$", re.MULTILINE)


def sign_in(config: LabConfig, url: str | None = None) -> tuple[requests.Session, str]:
    """A session signed in as the lab's administrator at ``url`` (default: the portal's address,
    PORTAL_PORT), and its Cookie header.
    """
    url = url or f"http://127.0.0.1:{config.port('PORTAL_PORT')}"
    session = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', session.get(f"{url}/login", timeout=10).text)
    if token is None:
        raise SystemExit(f"{url} shows no sign-in form")
    form = {"username": config.env["PORTAL_ADMIN_USER"], "password": config.env["PORTAL_ADMIN_PASSWORD"]}
    session.post(
        f"{url}/login", data={**form, "csrf_token": token.group(1)}, allow_redirects=False, timeout=10
    )
    return session, "; ".join(f"{name}={value}" for name, value in session.cookies.items())


def live_clients(config: LabConfig) -> dict[str, int]:
    """The Socket.IO clients each portal process holds (``web``, or ``web-1`` ...), from the
    ``portal_live_clients`` of its own ``/metrics``, asked at its own address, not through the
    front; a process that does not answer is left out.
    """
    counts: dict[str, int] = {}
    for name, url in portal_urls(config).items():
        session, _cookie = sign_in(config, url)
        answer = session.get(f"{url}/metrics", timeout=10)
        found = _LIVE_CLIENTS.search(answer.text) if answer.status_code == 200 else None
        if found is not None:
            counts[name] = round(float(found.group(1)))
    return counts


def worker_rss_mib(config: LabConfig) -> float:
    """VmRSS of the portal's gunicorn worker, in MiB."""
    master = int((config.data_dir / "run" / "web.pid").read_text().split()[0])
    worker = Path(f"/proc/{master}/task/{master}/children").read_text().split()[0]
    for line in Path(f"/proc/{worker}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakMemory:
    """Samples the worker's memory every ``every_s`` seconds while in use; ``peak`` is the highest."""

    def __init__(self, config: LabConfig, every_s: float = 0.5) -> None:
        self.config = config
        self.every_s = every_s
        self.peak = worker_rss_mib(config)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._done.set()
        self._thread.join(2)

    def _sample(self) -> None:
        while not self._done.wait(self.every_s):
            self.peak = max(self.peak, worker_rss_mib(self.config))
