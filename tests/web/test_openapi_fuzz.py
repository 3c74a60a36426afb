"""The OpenAPI document: valid 3.1, complete, and true to the running portal (schemathesis)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate

from tests.conftest import RunningLab
from tests.web.portal_testing import api_token
from web.api.openapi import DOCUMENT

# -- the document ----------------------------------------------------------------------------


def test_document_is_valid_openapi_3_1() -> None:
    validate(DOCUMENT)  # raises with the first problem
    assert DOCUMENT["openapi"].startswith("3.1")


def _documented() -> dict[tuple[str, str], set[str]]:
    """(method, path) -> names of the parameters described."""
    operations = {}
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            names = {parameter["name"] for parameter in operation.get("parameters", [])}
            operations[(method.upper(), path)] = names
    return operations


def _served(app: Flask) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") or rule.rule == "/metrics":
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule).replace("{alarm_id}", "{id}")
            routes |= {(method, path) for method in rule.methods or () if method not in ("HEAD", "OPTIONS")}
    return routes


def test_every_route_is_described_and_every_description_is_served(app: Flask) -> None:
    assert _served(app) == set(_documented())


@pytest.mark.parametrize(
    ("operation", "parameters"),
    [
        (("GET", "/api/devices"), {"room", "prefix", "q", "limit", "sort", "cursor"}),
        (("GET", "/api/latest"), {"room", "device", "limit", "cursor"}),
        (
            ("GET", "/api/history"),
            {"room", "device", "attr", "from", "to", "bucket", "agg", "limit", "format"},
        ),
        (("GET", "/api/alarms"), {"state", "severity", "type", "room", "device", "acked", "limit", "before"}),
        (("GET", "/api/alarms/summary"), set()),
        (("POST", "/api/alarms/ack"), set()),
        (("POST", "/api/alarms/clear"), set()),
        (("DELETE", "/api/devices"), {"room", "prefix"}),
        (("DELETE", "/api/devices/{room}/{device}"), {"room", "device"}),
        (("GET", "/api/alarms/{id}"), {"id"}),
        (("POST", "/api/alarms/{id}/ack"), {"id"}),
        (("POST", "/api/alarms/{id}/clear"), {"id"}),
        (("POST", "/api/devices/{room}/{device}/set/{attr}"), {"room", "device", "attr"}),
    ],
)
def test_every_parameter_is_described(operation: tuple[str, str], parameters: set[str]) -> None:
    assert _documented()[operation] == parameters


def test_only_the_document_itself_is_open() -> None:
    open_paths = [
        path
        for path, item in DOCUMENT["paths"].items()
        for operation in item.values()
        if operation.get("security") == []
    ]
    assert open_paths == ["/api/openapi.json"]


# -- against a running portal ------------------------------------------------------------------


@pytest.fixture(scope="module")
def bearer(lab: RunningLab) -> str:
    return api_token(lab, label="schemathesis")


# The document is the module's data; the test below first checks the portal serves exactly it.
schema = schemathesis.openapi.from_dict(DOCUMENT)


@pytest.mark.integration
@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_makes_the_portal_fail(case: schemathesis.Case[Any], lab: RunningLab, bearer: str) -> None:
    served = requests.get(f"{lab.portal_url}/api/openapi.json", timeout=10)
    assert served.json() == DOCUMENT
    case.call_and_validate(
        base_url=lab.portal_url,
        headers={"Authorization": f"Bearer {bearer}"},
        checks=[
            schemathesis.checks.not_a_server_error,
            schemathesis.checks.status_code_conformance,
            schemathesis.checks.content_type_conformance,
        ],
        timeout=30,
    )
