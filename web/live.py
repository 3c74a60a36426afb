"""Live push to browsers over Socket.IO: subscriptions per scope, coalesced batched updates.

Client to server (default namespace ``/``):

``subscribe`` / ``unsubscribe``
    ``{"scope": "site"}``, ``{"scope": "room", "room": R}`` or
    ``{"scope": "device", "room": R, "device": D}``. A client may hold several subscriptions.
    The acknowledgement (if the client asks for one) is ``{"scope": {...}}`` on success and
    ``{"error": "..."}`` otherwise.

Server to client:

``snapshot``
    Sent at once after each ``subscribe`` (and on connect for the default subscription): the
    latest value of every attribute in that scope,
    ``[{"room": str, "device": str, "attr": str, "value": float | str, "ts": int}, ...]``,
    ``ts`` in milliseconds since 1970 (UTC). Empty if the values cannot be read. A big scope's
    snapshot comes as several messages of at most :data:`SNAPSHOT_PAGE` values, each sent once
    the client has read most of the previous ones, and holds at most :data:`SNAPSHOT_MAX` values
    (ordered by room, device and attribute).
``snapshot_truncated``
    ``{"scope": {...}, "sent": n}`` after the snapshot of a scope that holds more values than
    :data:`SNAPSHOT_MAX`: subscribe to rooms or devices, or page ``GET /api/latest``, for the rest.
``values``
    Batched updates in the same shape: at most one per attribute per flush interval
    (``PORTAL_LIVE_FLUSH_MS``), newest value wins, at most :data:`VALUES_PAGE` per message (a big
    flush is several messages). A client receives each value once even when its subscriptions
    overlap (a site subscription makes its room subscriptions silent, and so on).
``error``
    ``{"event": "subscribe" | "unsubscribe" | "connect", "error": "<one line>"}`` for a bad request.
``alarm``
    Alarm objects, emitted to the Socket.IO room ``site`` by the alarms module.
``alarms``
    ``{"count": n}`` to the room ``site`` after a bulk acknowledgement or clear of more alarms
    than :data:`web.alarms.PUSH_EACH_MAX` (instead of one ``alarm`` each): fetch them again.
``devices``
    ``{}`` to every client when new devices appeared: :data:`DEVICES_DELAY_S` after the first of
    them, then at most once per :data:`DEVICES_NOTICE_S` (a page listing devices fetches its page
    again).
``status``
    The portal's own health (:mod:`web.status`): sent on connect, then to everybody at each change.
``removed``
    ``{"room": R, "device": D}``, ``{"room": R}``, ``{"room": R, "prefix": P}`` or ``{"prefix": P}``
    to every client at once when devices were removed (:mod:`web.removal`): the devices of that
    room, whose name is that or starts with that prefix.

Only signed-in sessions (the Flask session cookie travels with the handshake) or clients with a
valid bearer token (``auth={"token": ...}``, when a token check is given) may connect; others
are refused. A client that connects without ``auth={"scopes": [...]}`` is subscribed to the site,
which keeps simple clients simple; the portal's pages pass ``{"scopes": []}`` and subscribe
themselves.

One client never holds up the others. No lock is held while sending. Each client's messages wait
in its own Engine.IO queue; a client with more than :data:`MAX_BACKLOG` of them waiting (a laptop
gone to sleep, a client that stopped reading) is dropped without a goodbye, so that a client still
alive reconnects at once and starts again from a fresh snapshot. :meth:`Live.stuck_s` tells
``/readyz`` when live updates have stopped moving.

Socket.IO rooms: every accepted client is in :data:`SITE_ROOM` (``site``: events for everybody,
such as alarms); value subscribers are in the channels of :mod:`web.coalescer` (``site:values``,
``room:<room>``, ``device:<room>/<device>``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from engineio.payload import Payload
from flask import request
from flask_socketio import SocketIO
from socketio.packet import Packet
from sqlalchemy.exc import SQLAlchemyError

from web.accounts import token_digest
from web.auth import current_session, current_user
from web.cache import LatestValue
from web.coalescer import Coalescer, minimal_cover
from web.db_errors import first_line
from web.metrics import Metrics
from web.snapshots import SnapshotSource
from wire.scopes import Scope, ScopeError

log = logging.getLogger(__name__)

SNAPSHOT_EVENT = "snapshot"
SNAPSHOT_TRUNCATED_EVENT = "snapshot_truncated"
#: Most values in one ``snapshot`` message: a scope's snapshot is paged over several.
SNAPSHOT_PAGE = 500
#: Most values in the snapshot of one scope (a site of 20,000 devices sends this many, then says so).
SNAPSHOT_MAX = 5000
#: While a client is behind, the next page of its snapshot waits this long before it looks again.
SNAPSHOT_PAUSE_S = 0.05
DEVICES_EVENT = "devices"
REMOVED_EVENT = "removed"
STATUS_EVENT = "status"
#: "devices" notices go out at most this often: a flood of new names is one notice a second.
DEVICES_NOTICE_S = 1.0
#: The first new device is announced this long after it was admitted (its first batch is stored
#: by then, so a page that fetches its device list on the notice finds it).
DEVICES_DELAY_S = 0.3
VALUES_EVENT = "values"
ERROR_EVENT = "error"
NAMESPACE = "/"
#: The Socket.IO room of every signed-in client, whatever it subscribed to (alarms go there).
SITE_ROOM = "site"
#: Most subscriptions one client may hold (a page needs a handful).
MAX_SUBSCRIPTIONS = 64
#: Most messages Engine.IO takes in one long-polling request. Until a connection upgrades to
#: WebSocket, a page's subscriptions (the overview's 48 devices, say) travel together in one
#: request, and Engine.IO refuses a request of more than its default of 16 messages, dropping all
#: of them: the page then never got a live value. Room for every subscription twice (a page that
#: changes unsubscribes from the old ones too), and then some; a bigger request is still refused.
POLLING_MESSAGES_MAX = 3 * MAX_SUBSCRIPTIONS
#: How often an idle flusher checks whether it should stop.
POLL_S = 0.5
#: Most events in one ``values`` message: a big flush goes out as several, so no single message is
#: huge and a viewer's backlog (counted in messages) stays bounded in bytes too.
VALUES_PAGE = 500
#: Messages waiting to be written to one viewer beyond which it is dropped: it cannot keep up (a
#: laptop gone to sleep, a client that stopped reading). About five seconds of flushes.
MAX_BACKLOG = 50
#: The live path is stuck when values wait this long without a flush completing.
STUCK_S = 10.0


class JsonPacket(Packet):  # type: ignore[misc]  # python-socketio ships no type hints
    """Socket.IO packets that never carry binary attachments.

    Every event the portal emits is plain JSON, so the per-packet walk over all the data looking
    for ``bytes`` (a twentieth of the portal's CPU while it pushes to hundreds of clients) is
    skipped. Incoming packets are decoded as usual.
    """

    uses_binary_events = False


#: Returns the user a bearer token belongs to, or ``None``.
TokenCheck = Callable[[str], str | None]
#: How a client signed in: ``("session", session hash)`` or ``("token", token digest)``.
Credential = tuple[str, str]


class Live:
    """Socket.IO handlers, per-client subscriptions and the flusher thread.

    Args:
        socketio: the app's Socket.IO server.
        snapshot: the latest values of a scope (the last-value cache, or the database).
        metrics: where connected clients and pushed updates are counted.
        flush_interval_s: shortest time between two ``values`` flushes.
        token_user: checks bearer tokens sent as ``auth={"token": ...}``; sessions only when omitted.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        socketio: SocketIO,
        snapshot: SnapshotSource,
        metrics: Metrics,
        *,
        flush_interval_s: float = 0.1,
        token_user: TokenCheck | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.socketio = socketio
        self._snapshot = snapshot
        self._metrics = metrics
        self._token_user = token_user
        self.coalescer = Coalescer(flush_interval_s, clock)
        self._lock = threading.Lock()
        self._scopes: dict[str, set[Scope]] = {}  # sid -> what it asked for
        self._joined: dict[str, set[str]] = {}  # sid -> value channels it is in
        self._listeners: Counter[str] = Counter()  # value channel -> clients in it
        self._credentials: dict[str, Credential] = {}  # sid -> how it signed in
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._clock = clock
        self._flushing_since: float | None = None  # set while a flush is being sent
        self._new_devices_since: float | None = None  # the first new device not yet announced
        self._last_notice = float("-inf")
        #: The portal's status for a client that connects (see :mod:`web.status`), once it is known.
        self.status_of: Callable[[], dict[str, Any]] | None = None
        # Engine.IO's knob is this class attribute, for the whole process (one portal per process).
        Payload.max_decode_packets = POLLING_MESSAGES_MAX
        socketio.on_event("connect", self._on_connect)
        socketio.on_event("disconnect", self._on_disconnect)
        socketio.on_event("subscribe", self._on_subscribe)
        socketio.on_event("unsubscribe", self._on_unsubscribe)

    # -- producer side ----------------------------------------------------------------------

    def send(self, event: str, data: Any, *, to: str) -> None:
        """Emit to this process's clients only: with replicas, each sends its own clients their
        values, snapshots and status (events for everybody go through the message queue)."""
        self.socketio.emit(event, data, to=to, ignore_queue=True)

    def publish(self, values: list[LatestValue]) -> None:
        """Queue newly stored values for the next flush (any thread may call this)."""
        if values:
            self.coalescer.offer(values)
            self._wake.set()

    def devices_changed(self) -> None:
        """New devices were admitted (any thread): a ``devices`` notice goes out shortly."""
        if self._new_devices_since is None:
            self._new_devices_since = self._clock()
            self._wake.set()

    def devices_removed(self, selection: dict[str, str]) -> None:
        """Tell every client at once that the devices of ``selection`` were removed."""
        self.socketio.emit(REMOVED_EVENT, selection, to=SITE_ROOM)

    def announce_devices(self) -> bool:
        """Send the ``devices`` notice if one is due; True when it was sent."""
        if self._notice_in_s() != 0:
            return False
        self._new_devices_since = None
        self._last_notice = self._clock()
        self.socketio.emit(DEVICES_EVENT, {}, to=SITE_ROOM)
        return True

    def _notice_in_s(self) -> float | None:
        """Seconds until the ``devices`` notice is due: ``None`` when there is none, 0 when due now."""
        since = self._new_devices_since
        if since is None:
            return None
        due = max(since + DEVICES_DELAY_S, self._last_notice + DEVICES_NOTICE_S)
        return max(0.0, due - self._clock())

    def start(self) -> None:
        """Start the flusher thread (a daemon)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="portal-live", daemon=True)
            self._thread.start()

    def flush(self) -> int:
        """Send what is pending if a flush is due; returns the number of updates delivered.

        The routing (which values go to which channels) is decided under the lock, so that a
        client joining a channel either gets this flush or finds its values in its snapshot; the
        sending happens after the lock is released. Sending may close a client that stopped
        answering (Engine.IO does that from inside the send), whose disconnect handler takes the
        same lock: holding it here would stop live updates for everyone, for good.
        """
        with self._lock:
            routed = self.coalescer.flush(self._listeners)
            listeners = {channel: self._listeners[channel] for channel in routed or ()}
        if not routed:
            return 0
        self._flushing_since = self._clock()
        timer = time.perf_counter()
        delivered = 0
        try:
            for channel, events in routed.items():
                for first in range(0, len(events), VALUES_PAGE):
                    self.send(VALUES_EVENT, events[first : first + VALUES_PAGE], to=channel)
                delivered += len(events) * listeners[channel]
            self.shed_laggards()
        finally:
            self._flushing_since = None
        self._metrics.live_flush_seconds.observe(time.perf_counter() - timer)
        self._metrics.live_updates.inc(delivered)
        return delivered

    def shed_laggards(self) -> list[str]:
        """Drop every client with more than :data:`MAX_BACKLOG` messages waiting to be written.

        Such a client cannot keep up (asleep, stalled, or on a link too slow for its scope); what
        waits for it would grow without bound. Dropping it closes its transport without a
        goodbye, so a client that is still alive reconnects by itself and starts again from a
        fresh snapshot. Returns the dropped clients' session ids.
        """
        with self._lock:
            sids = list(self._scopes)
        dropped = []
        for sid in sids:
            socket = self._engine_socket(sid)
            if socket is None or socket.queue.qsize() <= MAX_BACKLOG:
                continue
            log.warning(
                "live client dropped: %s messages waiting, it is not reading (asleep or too slow)",
                socket.queue.qsize(),
            )
            self._metrics.live_dropped.inc()
            socket.close(wait=False, abort=True)
            dropped.append(sid)
        return dropped

    def stuck_s(self) -> float | None:
        """Seconds the live path has been stuck, or ``None`` when it is moving.

        Stuck: one flush has lasted longer than :data:`STUCK_S`, or values have waited that long
        for a flush (the flusher died, or never gets its turn).
        """
        now = self._clock()
        started = self._flushing_since
        if started is not None and now - started > STUCK_S:
            return now - started
        waiting = self.coalescer.waiting_since()
        if waiting is not None and now - waiting > STUCK_S:
            return now - waiting
        return None

    def end_session(self, digest: str) -> int:
        """Close the connections of one session (signed out here); returns how many."""
        return self._close_where(lambda credential: credential == ("session", digest), "signed out")

    def recheck(
        self,
        sessions_alive: Callable[[set[str]], set[str] | None],
        tokens_alive: Callable[[set[str]], set[str]],
    ) -> int:
        """Close the connections whose session or token has ended since they connected.

        Args:
            sessions_alive: which session hashes are still open (None: cannot tell, keep them).
            tokens_alive: which token digests still authenticate.

        Returns:
            How many connections were closed.
        """
        with self._lock:
            held = set(self._credentials.values())
        sessions = {digest for kind, digest in held if kind == "session"}
        tokens = {digest for kind, digest in held if kind == "token"}
        open_sessions = sessions_alive(sessions) if sessions else set()
        try:
            live_tokens = tokens_alive(tokens) if tokens else set()
        except SQLAlchemyError:
            live_tokens = tokens  # cannot tell: keep them
        ended = {("session", d) for d in sessions - (sessions if open_sessions is None else open_sessions)}
        ended |= {("token", d) for d in tokens - live_tokens}
        if not ended:
            return 0
        return self._close_where(lambda credential: credential in ended, "session or token ended")

    def _close_where(self, ended: Callable[[Credential], bool], why: str) -> int:
        with self._lock:
            sids = [sid for sid, credential in self._credentials.items() if ended(credential)]
        for sid in sids:
            self.socketio.server.disconnect(sid, namespace=NAMESPACE)
        if sids:
            log.info("closed %s live connections: %s", len(sids), why)
        return len(sids)

    def _engine_socket(self, sid: str) -> Any:
        """The Engine.IO socket of a Socket.IO client (its queue holds what waits to be written)."""
        server = self.socketio.server
        eio_sid = server.manager.eio_sid_from_sid(sid, NAMESPACE)
        return None if eio_sid is None else server.eio.sockets.get(eio_sid)

    def close_all(self) -> None:
        """Stop the flusher and close every client's connection (on shutdown).

        Browsers reconnect when the portal is back.
        """
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        participants = list(self.socketio.server.manager.get_participants(NAMESPACE, None))
        for _sid, eio_sid in participants:
            try:
                self.socketio.server.eio.disconnect(eio_sid)
            except Exception:  # a client that is already gone must not stop the others
                log.debug("closing live client %s failed", eio_sid, exc_info=True)
        if participants:
            log.info("closed %s live connections", len(participants))

    @property
    def clients(self) -> int:
        """Connected, signed-in clients."""
        return len(self._scopes)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            wait = self.coalescer.wait_s()
            notice = self._notice_in_s()
            if wait is None:
                self._wake.wait(POLL_S if notice is None else min(POLL_S, notice))
            elif wait > 0:
                self._stop.wait(wait if notice is None else min(wait, notice))
            else:
                try:
                    self.flush()
                except Exception:  # the flusher must outlive a bug in one flush
                    log.exception("live flush failed")
            try:
                self.announce_devices()
            except Exception:
                log.exception("live devices notice failed")

    # -- Socket.IO handlers -------------------------------------------------------------------

    def _user(self, auth: Any) -> tuple[str, Credential] | None:
        """Who connects, and with what: a signed-in session, or a bearer token."""
        user = current_user()
        if user is not None:
            digest = current_session()
            return None if digest is None else (user, ("session", digest))
        if self._token_user is not None and isinstance(auth, dict):
            token = auth.get("token")
            if isinstance(token, str) and token:
                user = self._token_user(token)
                if user is not None:
                    return user, ("token", token_digest(token))
        return None

    def _on_connect(self, auth: Any = None) -> bool:
        found = self._user(auth)
        if found is None:
            log.info("live connection refused: not signed in")
            return False
        user, credential = found
        sid: str = request.sid  # type: ignore[attr-defined]
        with self._lock:
            self._scopes[sid] = set()
            self._joined[sid] = set()
            self._credentials[sid] = credential
        self.socketio.server.enter_room(sid, SITE_ROOM, namespace=NAMESPACE)
        self._metrics.live_clients.inc()
        if self.status_of is not None:
            self.send(STATUS_EVENT, self.status_of(), to=sid)
        scopes = [Scope("site")]
        if isinstance(auth, dict) and "scopes" in auth:
            try:
                scopes = _parse_scopes(auth["scopes"])
            except ScopeError as exc:
                self._error(sid, "connect", str(exc))
                scopes = []
        for scope in scopes:
            self._subscribe(sid, scope)
        log.info("live client connected user=%s scopes=%s", user, len(scopes))
        return True

    def _on_disconnect(self, _reason: Any = None) -> None:
        sid: str = request.sid  # type: ignore[attr-defined]
        with self._lock:
            known = self._scopes.pop(sid, None) is not None
            self._credentials.pop(sid, None)
            for channel in self._joined.pop(sid, set()):
                self._listen(channel, -1)
        if known:
            self._metrics.live_clients.dec()
        log.debug("live client disconnected")

    def _on_subscribe(self, data: Any = None) -> dict[str, Any]:
        sid: str = request.sid  # type: ignore[attr-defined]
        try:
            scope = Scope.parse(data)
        except ScopeError as exc:
            return self._error(sid, "subscribe", str(exc))
        with self._lock:
            held = self._scopes.get(sid)
            if held is not None and scope not in held and len(held) >= MAX_SUBSCRIPTIONS:
                full = f"at most {MAX_SUBSCRIPTIONS} subscriptions per client; unsubscribe first"
            else:
                full = None
        if full is not None:
            return self._error(sid, "subscribe", full)
        self._subscribe(sid, scope)
        return {"scope": scope.as_dict()}

    def _on_unsubscribe(self, data: Any = None) -> dict[str, Any]:
        sid: str = request.sid  # type: ignore[attr-defined]
        try:
            scope = Scope.parse(data)
        except ScopeError as exc:
            return self._error(sid, "unsubscribe", str(exc))
        with self._lock:
            held = self._scopes.get(sid)
            if held is not None:
                held.discard(scope)
                self._rejoin(sid)
        return {"scope": scope.as_dict()}

    # -- subscriptions ----------------------------------------------------------------------

    def _subscribe(self, sid: str, scope: Scope) -> None:
        """Join the scope's channel first, then send its snapshot: no value falls in between."""
        with self._lock:
            held = self._scopes.get(sid)
            if held is None:  # disconnected meanwhile
                return
            held.add(scope)
            self._rejoin(sid)
        self._send_snapshot(sid, scope)

    def resnapshot(self) -> int:
        """Send every client a fresh snapshot of each scope it holds; returns how many were sent.

        For when live values were lost on the way (Redis out of reach between replicas): what a
        client shows is whole again, whatever it missed.
        """
        with self._lock:
            held = [(sid, list(scopes)) for sid, scopes in self._scopes.items()]
        sent = 0
        for sid, scopes in held:
            for scope in scopes:
                self._send_snapshot(sid, scope)
                sent += 1
        if sent:
            log.info("sent %s fresh snapshots to %s live clients", sent, len(held))
        return sent

    def _send_snapshot(self, sid: str, scope: Scope) -> None:
        """The latest values of ``scope``, to ``sid``, in pages it can keep up with."""
        try:
            values = self._snapshot(scope, SNAPSHOT_MAX + 1)
        except SQLAlchemyError as exc:
            log.error("live snapshot unavailable, sending an empty one: %s", first_line(exc))
            values = []
        truncated = len(values) > SNAPSHOT_MAX
        events = [value.as_event() for value in values[:SNAPSHOT_MAX]]
        for first in range(0, max(len(events), 1), SNAPSHOT_PAGE):
            if first and not self._wait_for_room(sid):
                return  # it does not read: shed_laggards drops it
            self.send(SNAPSHOT_EVENT, events[first : first + SNAPSHOT_PAGE], to=sid)
        if truncated:
            notice = {"scope": scope.as_dict(), "sent": len(events)}
            self.send(SNAPSHOT_TRUNCATED_EVENT, notice, to=sid)

    def _wait_for_room(self, sid: str) -> bool:
        """Wait (at most :data:`STUCK_S`) until the client has read most of what waits for it."""
        deadline = self._clock() + STUCK_S
        while True:
            socket = self._engine_socket(sid)
            if socket is None or socket.queue.qsize() <= MAX_BACKLOG // 2:
                return sid in self._scopes
            if self._clock() >= deadline:
                return False
            time.sleep(SNAPSHOT_PAUSE_S)

    def _rejoin(self, sid: str) -> None:
        """Put ``sid`` in exactly the channels of its minimal cover (caller holds the lock)."""
        wanted = {scope.channel for scope in minimal_cover(self._scopes[sid])}
        current = self._joined[sid]
        server = self.socketio.server
        for channel in wanted - current:
            server.enter_room(sid, channel, namespace=NAMESPACE)
            self._listen(channel, +1)
        for channel in current - wanted:
            server.leave_room(sid, channel, namespace=NAMESPACE)
            self._listen(channel, -1)
        self._joined[sid] = wanted

    def _listen(self, channel: str, delta: int) -> None:
        self._listeners[channel] += delta
        if self._listeners[channel] <= 0:
            del self._listeners[channel]

    def _error(self, sid: str, event: str, message: str) -> dict[str, Any]:
        log.info("live %s refused: %s", event, message)
        self.send(ERROR_EVENT, {"event": event, "error": message}, to=sid)
        return {"error": message}


def _parse_scopes(data: Any) -> list[Scope]:
    if not isinstance(data, list):
        raise ScopeError('"scopes" must be a list')
    if len(data) > MAX_SUBSCRIPTIONS:
        raise ScopeError(f'"scopes" holds more than {MAX_SUBSCRIPTIONS} subscriptions')
    return [Scope.parse(item) for item in data]
