"""Socket.IO live push: sign-in, subscriptions per scope, snapshots, coalesced values, bad input."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_socketio import SocketIO

from web.cache import LatestValue
from web.live import (
    DEVICES_DELAY_S,
    MAX_BACKLOG,
    MAX_SUBSCRIPTIONS,
    SNAPSHOT_MAX,
    SNAPSHOT_PAGE,
    STUCK_S,
    VALUES_PAGE,
    Live,
)
from web.metrics import Metrics
from web.portal import Portal, portal_of
from web.snapshots import store_snapshot
from wire.scopes import Scope

TS = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
TS_MS = 1700000000000

Connect = Callable[..., Any]


def lv(room: str, device: str, attr: str, value: float | str) -> LatestValue:
    return LatestValue(room, device, attr, value, TS)


def events(socket: Any, name: str | None = None) -> list[tuple[str, Any]]:
    """The events received since the last call, or those called `name`; every event but the
    portal's ``status``, which each client gets on connect (tested on its own), when no name is given."""
    received = socket.get_received()
    return [
        (e["name"], e["args"][0])
        for e in received
        if e["name"] == name or (name is None and e["name"] != "status")
    ]


def wait_values(socket: Any, count: int, timeout: float = 3.0) -> list[dict[str, Any]]:
    """Values received until `count` arrived (the flusher thread sends them)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        for _name, values in events(socket, "values"):
            got.extend(values)
        time.sleep(0.01)
    return got


def settle(portal: Portal) -> None:
    """Wait until the flusher has sent everything pending (and one interval has passed)."""
    deadline = time.monotonic() + 3
    while portal.live.coalescer.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(portal.live.coalescer.interval_s + 0.05)


@pytest.fixture
def portal(app: Flask) -> Portal:
    return portal_of(app)


@pytest.fixture
def connect(app: Flask, portal: Portal, signed_in: FlaskClient) -> Iterator[Connect]:
    """Factory: a signed-in Socket.IO test client (disconnected after the test)."""
    sockets: list[Any] = []

    def make(**kwargs: Any) -> Any:
        socket = portal.socketio.test_client(app, flask_test_client=signed_in, **kwargs)
        sockets.append(socket)
        return socket

    yield make
    for socket in sockets:
        if socket.is_connected():
            socket.disconnect()


@pytest.fixture
def snapshot_of(portal: Portal, monkeypatch: pytest.MonkeyPatch) -> list[LatestValue]:
    """Replace the database snapshot by this list (filtered by scope like the real one)."""
    stored: list[LatestValue] = []
    monkeypatch.setattr(
        portal.live,
        "_snapshot",
        lambda scope, limit: [v for v in stored if scope.holds(v.room, v.device)][:limit],
    )
    return stored


# -- connecting ----------------------------------------------------------------------------


def test_anonymous_clients_are_refused(app: Flask, portal: Portal, client: FlaskClient) -> None:
    socket = portal.socketio.test_client(app, flask_test_client=client)
    assert not socket.is_connected()


def test_anonymous_clients_with_a_made_up_token_are_refused(
    app: Flask, portal: Portal, client: FlaskClient
) -> None:
    socket = portal.socketio.test_client(app, flask_test_client=client, auth={"token": "guess"})
    assert not socket.is_connected()


def test_signed_in_client_gets_a_site_snapshot_even_with_the_database_down(connect: Connect) -> None:
    socket = connect()
    assert socket.is_connected()
    assert events(socket) == [("snapshot", [])]


def test_a_client_hears_the_portals_status_as_it_connects(connect: Connect, portal: Portal) -> None:
    socket = connect(auth={"scopes": []})
    received = socket.get_received()
    assert [event["name"] for event in received] == ["status"]
    assert received[0]["args"][0] == portal.status.as_json()
    fields = {"broker", "database", "ingest", "live", "waiting", "problem", "replica"}
    assert set(received[0]["args"][0]) == fields


def test_a_client_that_brings_its_scopes_gets_their_snapshots(
    connect: Connect, snapshot_of: list[LatestValue]
) -> None:
    snapshot_of.extend([lv("r1", "d", "t", 1.0), lv("r2", "d", "t", 2.0)])
    socket = connect(auth={"scopes": [{"scope": "room", "room": "r2"}]})
    assert events(socket) == [
        ("snapshot", [{"room": "r2", "device": "d", "attr": "t", "value": 2.0, "ts": TS_MS}])
    ]


def test_a_client_with_no_scopes_gets_nothing_until_it_subscribes(connect: Connect, portal: Portal) -> None:
    socket = connect(auth={"scopes": []})
    assert events(socket) == []
    portal.live.publish([lv("r", "d", "t", 1.0)])
    settle(portal)
    assert events(socket) == []


def test_bad_scopes_on_connect_get_an_error_but_the_client_stays(connect: Connect) -> None:
    socket = connect(auth={"scopes": "site"})
    assert socket.is_connected()
    assert events(socket) == [("error", {"event": "connect", "error": '"scopes" must be a list'})]


def test_connected_clients_are_counted(connect: Connect, portal: Portal) -> None:
    before = portal.metrics.live_clients._value.get()
    first, second = connect(), connect()
    assert portal.metrics.live_clients._value.get() == before + 2
    first.disconnect()
    second.disconnect()
    assert portal.metrics.live_clients._value.get() == before


# -- subscriptions -------------------------------------------------------------------------


def test_subscribe_answers_at_once_with_the_scope_snapshot(
    connect: Connect, snapshot_of: list[LatestValue]
) -> None:
    snapshot_of.extend([lv("r", "d1", "t", 1.0), lv("r", "d2", "t", 2.0), lv("x", "d1", "t", 3.0)])
    socket = connect(auth={"scopes": []})
    ack = socket.emit("subscribe", {"scope": "device", "room": "r", "device": "d2"}, callback=True)
    assert ack == {"scope": {"scope": "device", "room": "r", "device": "d2"}}
    assert events(socket) == [
        ("snapshot", [{"room": "r", "device": "d2", "attr": "t", "value": 2.0, "ts": TS_MS}])
    ]


def test_each_client_receives_only_its_scopes(connect: Connect, portal: Portal) -> None:
    site = connect(auth={"scopes": [{"scope": "site"}]})
    room = connect(auth={"scopes": [{"scope": "room", "room": "r1"}]})
    device = connect(auth={"scopes": [{"scope": "device", "room": "r1", "device": "d2"}]})
    for socket in (site, room, device):
        socket.get_received()
    portal.live.publish([lv("r1", "d1", "t", 1.0), lv("r1", "d2", "t", 2.0), lv("r2", "d2", "t", 3.0)])
    assert sorted(v["value"] for v in wait_values(site, 3)) == [1.0, 2.0, 3.0]
    assert sorted(v["value"] for v in wait_values(room, 2)) == [1.0, 2.0]
    assert [v["value"] for v in wait_values(device, 1)] == [2.0]
    settle(portal)
    assert events(room, "values") == []
    assert events(device, "values") == []


def test_overlapping_scopes_deliver_each_value_once(connect: Connect, portal: Portal) -> None:
    socket = connect(auth={"scopes": []})
    for scope in ({"scope": "device", "room": "r", "device": "d"}, {"scope": "room", "room": "r"}):
        assert "error" not in socket.emit("subscribe", scope, callback=True)
    socket.get_received()
    portal.live.publish([lv("r", "d", "t", 1.0)])
    settle(portal)
    assert [v["value"] for v in wait_values(socket, 1)] == [1.0]
    assert events(socket, "values") == []


def test_unsubscribing_the_wider_scope_keeps_the_narrower_one(connect: Connect, portal: Portal) -> None:
    socket = connect(auth={"scopes": [{"scope": "site"}, {"scope": "device", "room": "r", "device": "d"}]})
    socket.emit("unsubscribe", {"scope": "site"}, callback=True)
    socket.get_received()
    portal.live.publish([lv("r", "d", "t", 1.0), lv("r", "other", "t", 2.0)])
    settle(portal)
    assert [v["value"] for v in wait_values(socket, 1)] == [1.0]


def test_unsubscribed_clients_get_no_more_values(connect: Connect, portal: Portal) -> None:
    socket = connect()
    ack = socket.emit("unsubscribe", {"scope": "site"}, callback=True)
    assert ack == {"scope": {"scope": "site"}}
    socket.get_received()
    portal.live.publish([lv("r", "d", "t", 1.0)])
    settle(portal)
    assert events(socket) == []


@pytest.mark.parametrize(
    "data",
    [
        None,
        "site",
        12,
        [],
        {"scope": "building"},
        {"scope": "room"},
        {"scope": "room", "room": ["r"]},
        {"scope": "room", "room": "a/b"},
        {"scope": "device", "room": "r", "device": "#"},
        {"scope": "device", "room": "r", "device": "x" * 70_000},
    ],
)
@pytest.mark.parametrize("event", ["subscribe", "unsubscribe"])
def test_bad_requests_get_an_error_event_and_the_client_stays(
    connect: Connect, portal: Portal, event: str, data: Any
) -> None:
    socket = connect(auth={"scopes": []})
    ack = socket.emit(event, data, callback=True)
    assert set(ack) == {"error"}
    [(name, error)] = events(socket)
    assert name == "error"
    assert error == {"event": event, "error": ack["error"]}
    assert "\n" not in error["error"]
    assert socket.is_connected()
    assert socket.emit("subscribe", {"scope": "site"}, callback=True) == {"scope": {"scope": "site"}}


def test_a_client_cannot_hold_unbounded_subscriptions(connect: Connect) -> None:
    socket = connect(auth={"scopes": []})
    for index in range(MAX_SUBSCRIPTIONS):
        assert "error" not in socket.emit("subscribe", {"scope": "room", "room": f"r{index}"}, callback=True)
    ack = socket.emit("subscribe", {"scope": "room", "room": "one-too-many"}, callback=True)
    assert "at most" in ack["error"]
    again = socket.emit("subscribe", {"scope": "room", "room": "r0"}, callback=True)
    assert again == {"scope": {"scope": "room", "room": "r0"}}, "re-subscribing is not a new one"


# -- values --------------------------------------------------------------------------------


def test_stored_values_are_pushed_in_the_event_shape(connect: Connect, portal: Portal) -> None:
    socket = connect()
    socket.get_received()
    portal.live.publish([lv("lab", "sensor1", "temperature", 21.5), lv("lab", "<script>", "state", "open")])
    got = wait_values(socket, 2)
    assert sorted(got, key=lambda v: v["device"]) == [
        {"room": "lab", "device": "<script>", "attr": "state", "value": "open", "ts": TS_MS},
        {"room": "lab", "device": "sensor1", "attr": "temperature", "value": 21.5, "ts": TS_MS},
    ]


def test_rapid_updates_are_coalesced_to_the_newest(connect: Connect, portal: Portal) -> None:
    socket = connect(auth={"scopes": [{"scope": "device", "room": "burst", "device": "d"}]})
    socket.get_received()
    before = portal.metrics.live_updates._value.get()
    for step in range(50):
        portal.live.publish([LatestValue("burst", "d", "t", float(step), TS)])
    settle(portal)
    got = [v["value"] for _name, values in events(socket, "values") for v in values]
    assert got[-1] == 49.0, "the final value is delivered"
    assert len(got) < 50, "intermediate values were coalesced"
    assert portal.metrics.live_updates._value.get() - before == len(got)


def test_snapshot_failure_sends_an_empty_snapshot(connect: Connect) -> None:
    # The unit-test app's database is unreachable: the real snapshot source raises.
    socket = connect(auth={"scopes": []})
    socket.emit("subscribe", {"scope": "room", "room": "r"})
    assert events(socket) == [("snapshot", [])]


def test_scope_snapshot_from_the_store_asks_for_the_scope_and_the_limit() -> None:
    asked: list[tuple[str | None, str | None, int | None]] = []

    def latest_values(
        room: str | None = None, device: str | None = None, *, limit: int | None = None
    ) -> list[LatestValue]:
        asked.append((room, device, limit))
        return []

    source = store_snapshot(latest_values)
    source(Scope("room", "r"), 10)
    source(Scope("device", "s", "d"), 5)
    source(Scope("site"), 7)
    assert asked == [("r", None, 10), ("s", "d", 5), (None, None, 7)]


def test_a_big_snapshot_comes_in_pages_and_says_when_it_was_cut(
    connect: Connect, snapshot_of: list[LatestValue]
) -> None:
    snapshot_of.extend(lv("big", f"d{index:05d}", "t", float(index)) for index in range(SNAPSHOT_MAX + 3))
    socket = connect(auth={"scopes": [{"scope": "room", "room": "big"}]})
    received = events(socket)
    pages = [values for name, values in received if name == "snapshot"]
    assert len(pages) == SNAPSHOT_MAX // SNAPSHOT_PAGE
    assert all(len(page) == SNAPSHOT_PAGE for page in pages)
    assert [v["device"] for page in pages for v in page] == [f"d{i:05d}" for i in range(SNAPSHOT_MAX)]
    assert received[-1] == (
        "snapshot_truncated",
        {"scope": {"scope": "room", "room": "big"}, "sent": SNAPSHOT_MAX},
    )


def test_close_all_closes_every_connection(
    connect: Connect, portal: Portal, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test client fakes the transport, so record what would be closed instead.
    first, second = connect(), connect(auth={"scopes": []})
    assert first.is_connected() and second.is_connected()
    closed: list[str] = []
    monkeypatch.setattr(portal.socketio.server.eio, "disconnect", closed.append)
    portal.live.close_all()
    portal.live.start()  # the module's app lives on for the other tests
    assert len(closed) == 2


# -- one client never holds up the others ------------------------------------------------------


def test_no_lock_is_held_while_a_flush_sends(
    connect: Connect, portal: Portal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sending may close a client whose disconnect handler takes the live lock (Engine.IO closes a
    client that stopped answering from inside the send): the lock must be free by then."""
    socket = connect(auth={"scopes": [{"scope": "device", "room": "lock", "device": "d"}]})
    socket.get_received()
    free: list[bool] = []
    emit = portal.socketio.emit

    def emit_checking_the_lock(*args: Any, **kwargs: Any) -> None:
        if args and args[0] == "values":
            acquired = portal.live._lock.acquire(timeout=0.5)
            if acquired:
                portal.live._lock.release()
            free.append(acquired)
        emit(*args, **kwargs)

    monkeypatch.setattr(portal.socketio, "emit", emit_checking_the_lock)
    portal.live.publish([lv("lock", "d", "t", 1.0)])
    assert wait_values(socket, 1)
    assert free == [True]


def test_a_big_flush_goes_out_in_bounded_messages(connect: Connect, portal: Portal) -> None:
    socket = connect(auth={"scopes": [{"scope": "room", "room": "big"}]})
    socket.get_received()
    count = VALUES_PAGE * 2 + 7
    portal.live.publish([lv("big", f"d{index}", "t", float(index)) for index in range(count)])
    messages: list[list[dict[str, Any]]] = []
    deadline = time.monotonic() + 3
    while sum(map(len, messages)) < count and time.monotonic() < deadline:
        messages.extend(values for _name, values in events(socket, "values"))
        time.sleep(0.01)
    assert sum(map(len, messages)) == count
    assert max(map(len, messages)) == VALUES_PAGE


def test_clients_with_a_long_backlog_are_dropped_and_counted(
    connect: Connect, portal: Portal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test client has no Engine.IO transport: stand one in whose queue has backed up."""
    behind, keeping_up = connect(), connect()

    class Transport:
        def __init__(self, waiting: int) -> None:
            self.queue = type("Queue", (), {"qsize": lambda _self: waiting})()
            self.closed = False

        def close(self, wait: bool = True, abort: bool = False) -> None:
            self.closed = True
            assert not wait, "never wait for a client that does not read"

    transports = {behind.eio_sid: Transport(MAX_BACKLOG + 1), keeping_up.eio_sid: Transport(MAX_BACKLOG)}
    monkeypatch.setattr(
        portal.live,
        "_engine_socket",
        lambda sid: transports.get(portal.socketio.server.manager.eio_sid_from_sid(sid, "/")),
    )
    before = portal.metrics.live_dropped._value.get()
    dropped = portal.live.shed_laggards()
    assert [portal.socketio.server.manager.eio_sid_from_sid(sid, "/") for sid in dropped] == [behind.eio_sid]
    assert transports[behind.eio_sid].closed and not transports[keeping_up.eio_sid].closed
    assert portal.metrics.live_dropped._value.get() == before + 1


def test_stuck_live_path_is_reported() -> None:
    now = [1000.0]
    live = Live(SocketIO(Flask(__name__)), lambda scope, limit: [], Metrics(), clock=lambda: now[0])
    assert live.stuck_s() is None, "nothing waits"
    live.publish([lv("r", "d", "t", 1.0)])  # the flusher is not running: the value waits
    now[0] += STUCK_S / 2
    assert live.stuck_s() is None, "not long enough yet"
    now[0] += STUCK_S
    assert live.stuck_s() == pytest.approx(STUCK_S * 1.5)


def test_new_devices_are_announced_shortly_then_at_most_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    live = Live(SocketIO(Flask(__name__)), lambda scope, limit: [], Metrics(), clock=lambda: now[0])
    sent: list[tuple[str, object]] = []
    monkeypatch.setattr(live.socketio, "emit", lambda event, data, to: sent.append((event, to)))
    assert not live.announce_devices(), "nothing new"
    live.devices_changed()
    live.devices_changed()
    assert not live.announce_devices(), "not before the first batch is stored"
    now[0] += DEVICES_DELAY_S
    assert live.announce_devices()
    assert sent == [("devices", "site")]
    for _ in range(100):  # a flood of new names
        live.devices_changed()
        now[0] += 0.05
        live.announce_devices()
    assert 1 + 4 <= len(sent) <= 1 + 5, "one notice a second over those 5 s"
