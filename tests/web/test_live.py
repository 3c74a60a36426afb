"""Socket.IO live push: only signed-in clients, a snapshot on connect, values after each batch."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from flask import Flask
from flask.testing import FlaskClient

from web.app import Portal
from web.storage import LatestValue


def test_anonymous_clients_are_refused(app: Flask, client: FlaskClient) -> None:
    portal: Portal = app.extensions["portal"]
    socket = portal.socketio.test_client(app, flask_test_client=client)
    assert not socket.is_connected()


def test_signed_in_client_gets_a_snapshot_even_with_the_database_down(
    app: Flask, signed_in: FlaskClient
) -> None:
    portal: Portal = app.extensions["portal"]
    socket = portal.socketio.test_client(app, flask_test_client=signed_in)
    assert socket.is_connected()
    received = socket.get_received()
    assert [(event["name"], event["args"]) for event in received] == [("snapshot", [[]])]
    socket.disconnect()


def test_stored_values_are_pushed_to_connected_clients(app: Flask, signed_in: FlaskClient) -> None:
    portal: Portal = app.extensions["portal"]
    socket = portal.socketio.test_client(app, flask_test_client=signed_in)
    socket.get_received()
    ts = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    portal.live.publish(
        [
            LatestValue("lab", "sensor1", "temperature", 21.5, ts),
            LatestValue("lab", "<script>", "state", "open", ts),
        ]
    )
    received = socket.get_received()
    assert len(received) == 1
    assert received[0]["name"] == "values"
    assert received[0]["args"] == [
        [
            {"room": "lab", "device": "sensor1", "attr": "temperature", "value": 21.5, "ts": 1700000000000},
            {"room": "lab", "device": "<script>", "attr": "state", "value": "open", "ts": 1700000000000},
        ]
    ]
    socket.disconnect()


def test_snapshot_comes_from_the_store(
    app: Flask, signed_in: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    portal: Portal = app.extensions["portal"]
    ts = datetime(2024, 1, 1, tzinfo=UTC)
    monkeypatch.setattr(portal.live, "_snapshot", lambda: [LatestValue("lab", "d", "a", "x", ts)])
    socket = portal.socketio.test_client(app, flask_test_client=signed_in)
    received = socket.get_received()
    assert received[0]["name"] == "snapshot"
    assert received[0]["args"] == [
        [{"room": "lab", "device": "d", "attr": "a", "value": "x", "ts": 1704067200000}]
    ]
    socket.disconnect()


def test_close_all_closes_every_connection(
    app: Flask, signed_in: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test client fakes the transport, so record what would be closed instead.
    portal: Portal = app.extensions["portal"]
    socket = portal.socketio.test_client(app, flask_test_client=signed_in)
    assert socket.is_connected()
    closed: list[str] = []
    monkeypatch.setattr(portal.socketio.server.eio, "disconnect", closed.append)
    portal.live.close_all()
    assert len(closed) == 1
