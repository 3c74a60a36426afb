"""Errors the server gives before the application sees a request are JSON too, and documented.

gunicorn refuses some requests by itself: a request line or headers over its limits, a request
that is not HTTP. The portal's worker (:mod:`web.server`) writes those answers as the API's
``{"error": ...}``; the OpenAPI document lists them for every operation.
"""

from __future__ import annotations

import itertools
import re
import socket
from pathlib import Path

import pytest
import requests

from labctl.config import new_instance
from labctl.services import Portal
from tests.conftest import RunningLab
from web.api.openapi import DOCUMENT
from web.api.params import MAX_REQUEST_LINE

ROOT = Path(__file__).resolve().parents[2]


def raw_request(lab: RunningLab, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes to the portal, return the status, headers and body it answers."""
    with socket.create_connection(("127.0.0.1", lab.port("PORTAL_PORT")), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.mark.integration
def test_an_overlong_query_is_a_json_414(lab: RunningLab) -> None:
    response = requests.get(
        f"{lab.portal_url}/api/latest", params={"room": "r" * MAX_REQUEST_LINE}, timeout=10
    )
    assert response.status_code == 414
    assert response.headers["Content-Type"] == "application/json"
    assert "Request Line is too large" in response.json()["error"]


@pytest.mark.integration
def test_a_query_just_under_the_limit_reaches_the_api(lab: RunningLab) -> None:
    room = "r" * (MAX_REQUEST_LINE - 200)
    response = requests.get(f"{lab.portal_url}/api/latest", params={"room": room}, timeout=10)
    assert response.status_code in (400, 401)  # the API's own answer: the name is too long, or no sign-in
    assert "error" in response.json()


@pytest.mark.integration
def test_overlong_headers_are_a_json_431(lab: RunningLab) -> None:
    response = requests.get(f"{lab.portal_url}/api/latest", headers={"X-Padding": "x" * 9000}, timeout=10)
    assert response.status_code == 431
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"].startswith("Request Header Fields Too Large")


@pytest.mark.integration
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /api/latest HTTP/9.9\r\n\r\n",
        b"GET /api/latest HTTP/1.1\r\nBad Header\r\n\r\n",
    ],
)
def test_malformed_requests_are_a_json_400(lab: RunningLab, request_bytes: bytes) -> None:
    status, headers, body = raw_request(lab, request_bytes)
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert b'"error"' in body


@pytest.mark.parametrize("status", ["400", "414", "431", "500"])
def test_every_operation_documents_the_errors_any_request_can_meet(status: str) -> None:
    missing = [
        f"{method.upper()} {path}"
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
        if status not in operation["responses"]
    ]
    assert not missing


def _gunicorn_options(argv: list[str]) -> dict[str, str]:
    return {flag: value for flag, value in itertools.pairwise(argv) if flag.startswith("--")}


def test_lab_and_image_serve_the_portal_the_same_way(tmp_path: Path) -> None:
    native = _gunicorn_options(Portal(new_instance(tmp_path)).spec().argv)
    command = re.search(r"exec (gunicorn [^\"]+)", (ROOT / "web" / "Dockerfile").read_text())
    assert command is not None, "the image runs gunicorn"
    image = _gunicorn_options(command.group(1).split())
    for flag in ("--worker-class", "--workers", "--worker-connections", "--limit-request-line"):
        assert native[flag] == image[flag], flag
    assert native["--worker-class"] == "web.server.Worker"
    assert int(native["--limit-request-line"]) == MAX_REQUEST_LINE
