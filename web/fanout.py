"""Live values shared by portal replicas through Redis (``REDIS_URL``).

Replicas split ingest (an MQTT shared subscription, :mod:`web.takeover`), so each stores only its
share of the values, yet every viewer must see every value whichever replica it is connected to::

    replica A: feeder --Fanout.send--PUBLISH--> Redis --message--> every replica (A too)
                                                                      |
                             guard (newest per attribute wins) <------+
                                      |
                             Live coalescer --Socket.IO--> that replica's viewers

A replica publishes the newest values of each batch its feeder takes, as a single portal pushes
them live: before the commit, which never holds up a live value. Each replica, the sender
included, receives every message, keeps the values in its last-value cache and feeds its own
live layer, so each viewer still gets at most one update per attribute per flush interval, from
one coalescer. Values are not coalesced before they are sent: a second coalescer would add up to a
flush interval of delay. Batches of two replicas can arrive in either order, so a value older than
one already received for its attribute is dropped (:class:`web.cache.LatestCache` remembers the
newest). Snapshots take the newest of the ``latest`` table and that cache (:func:`web.snapshots.newest_of`):
the table holds every replica's committed values whatever Redis missed, the cache the values
pushed live and not yet committed.

A removal (:mod:`web.removal`) travels the same way, so every replica forgets the removed
devices' values at once. Events for everybody (alarms, device notices, removals) go to the
browsers through Flask-SocketIO's own message queue on the same Redis; snapshots, values, errors
and the status are sent by each replica to its own viewers only.

Sending happens on a thread of its own, so a slow or absent Redis never holds up storage: batches
waiting while Redis is out of reach are dropped (they are stored; only their live push is lost), and
:attr:`Fanout.problem` says so. When Redis answers again, ``on_resume`` is called: every viewer gets a
fresh snapshot, which brings back what it missed.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
from redis.exceptions import RedisError

from web.cache import LatestCache, LatestValue
from wire.timestamps import EPOCH

log = logging.getLogger(__name__)

#: The Redis channel of shared live values, and Flask-SocketIO's channel for everybody's events.
VALUES_CHANNEL = "iot-lab:live-values"
SOCKETIO_CHANNEL = "iot-lab:socketio"
#: Batches waiting to be sent beyond which the oldest are dropped (Redis is too slow or gone).
WAITING_MAX = 1000
#: While Redis is out of reach, how often the listener tries again.
RETRY_S = 1.0
#: The listener's wait for one message before it looks whether it should stop.
POLL_S = 1.0
_MICROSECOND = timedelta(microseconds=1)
_VALUE_TYPES = (float, int, str)

#: Takes the values of one message.
Receiver = Callable[[list[LatestValue]], None]


@dataclass(frozen=True)
class RemovedDevices:
    """A removal, as another replica is told of it: the selection's fields, and the devices."""

    selection: dict[str, str]
    devices: list[tuple[str, str]]


#: Takes a removal (every replica's, this one's too).
Forget = Callable[[RemovedDevices], None]


def encode(values: Sequence[LatestValue]) -> bytes:
    """One message: ``[[room, device, attr, value, microseconds since 1970], ...]`` in JSON."""
    rows = [[v.room, v.device, v.attr, v.value, (v.ts - EPOCH) // _MICROSECOND] for v in values]
    return json.dumps(rows, separators=(",", ":")).encode()


def encode_removal(removed: RemovedDevices) -> bytes:
    """One message: ``{"removed": {selection}, "devices": [[room, device], ...]}`` in JSON."""
    document = {"removed": removed.selection, "devices": [list(pair) for pair in removed.devices]}
    return json.dumps(document, separators=(",", ":")).encode()


def decode(message: bytes | str) -> list[LatestValue] | RemovedDevices:
    """The values or the removal of one message; ``ValueError`` for a message not in the shape
    :func:`encode` or :func:`encode_removal` writes."""
    rows = json.loads(message.decode() if isinstance(message, bytes) else message)
    if isinstance(rows, dict):
        return _removal(rows)
    if not isinstance(rows, list):
        raise ValueError("not a list of values")
    values = []
    for row in rows:  # every value of every replica passes here: exact type checks, no generators
        if type(row) is not list or len(row) != 5:
            raise ValueError(f"not a value: {row!r:.100}")
        room, device, attr, value, micros = row
        if type(room) is not str or type(device) is not str or type(attr) is not str:
            raise ValueError(f"names must be text: {row!r:.100}")
        if type(value) not in _VALUE_TYPES:  # a bool is not a number here
            raise ValueError(f"value must be a number or text: {row!r:.100}")
        if type(micros) is not int:
            raise ValueError(f"time must be whole microseconds: {row!r:.100}")
        try:
            ts = EPOCH + micros * _MICROSECOND
        except OverflowError:
            raise ValueError(f"time out of range: {row!r:.100}") from None
        values.append(LatestValue(room, device, attr, value, ts))
    return values


def _removal(document: dict[str, Any]) -> RemovedDevices:
    selection, devices = document.get("removed"), document.get("devices")
    if not (isinstance(selection, dict) and all(isinstance(v, str) for v in selection.values())):
        raise ValueError("a removal's selection must be an object of names")
    if not (isinstance(devices, list) and all(_is_pair(item) for item in devices)):
        raise ValueError("a removal's devices must be [room, device] pairs")
    return RemovedDevices(selection, [(room, device) for room, device in devices])


def _is_pair(item: Any) -> bool:
    return isinstance(item, list) and len(item) == 2 and all(isinstance(name, str) for name in item)


def newest_only(cache: LatestCache, publish: Callable[[list[LatestValue]], None]) -> Receiver:
    """Hands on the values at least as new as the newest ``cache`` knows of their attribute.

    Batches of two replicas come in either order: the other replica's older value of an attribute
    must not replace a newer one already pushed. The cache remembers each attribute's newest.
    """

    def receive(values: list[LatestValue]) -> None:
        fresh = cache.newer(values)
        if fresh:
            cache.record(fresh, [])
            publish(fresh)

    return receive


class Fanout:
    """Publishes this replica's stored values to Redis and hands every replica's to ``receive``.

    Args:
        url: Redis, ``redis://:<password>@host:port/db``.
        receive: takes the values of one message (every replica's, this one's too), on the
            listener's thread.
        forget: takes a removal (every replica's, this one's too), on the listener's thread.
        on_resume: called (on the listener's thread) when Redis answers again after it did not.
        channel: the Redis channel (every replica of one lab uses the same).
    """

    def __init__(
        self,
        url: str,
        receive: Receiver,
        *,
        forget: Forget = lambda _removed: None,
        on_resume: Callable[[], None] = lambda: None,
        channel: str = VALUES_CHANNEL,
    ) -> None:
        self._url = url
        self._receive = receive
        self._forget = forget
        self._on_resume = on_resume
        self._channel = channel
        self._waiting: deque[Sequence[LatestValue] | RemovedDevices] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._send_error: str | None = None
        self._listen_error: str | None = "connecting"
        #: Values published, received, and dropped (not sent while Redis was out of reach).
        self.sent = 0
        self.received = 0
        self.dropped = 0

    def _client(self) -> redis.Redis:
        return redis.Redis.from_url(
            self._url, socket_connect_timeout=2.0, socket_timeout=5.0, health_check_interval=10
        )

    # -- this replica's values out ------------------------------------------------------------

    def send(self, values: Sequence[LatestValue]) -> None:
        """Queue values for every replica (any thread; never blocks on Redis)."""
        if not values:
            return
        with self._lock:
            self._waiting.append(values)
            while len(self._waiting) > WAITING_MAX:
                oldest = self._waiting.popleft()
                self.dropped += 0 if isinstance(oldest, RemovedDevices) else len(oldest)
        self._wake.set()

    def removed(self, removed: RemovedDevices) -> None:
        """Queue a removal for every replica (any thread; never blocks on Redis)."""
        with self._lock:
            self._waiting.append(removed)
        self._wake.set()

    def _send_loop(self) -> None:
        client: redis.Redis | None = None
        while not self._stop.is_set():
            self._wake.wait(POLL_S)
            self._wake.clear()
            with self._lock:
                waiting, self._waiting = list(self._waiting), deque()
            for message, values in _messages(waiting):
                try:
                    client = client or self._client()
                    client.publish(self._channel, message)
                except (RedisError, OSError) as exc:
                    client = None
                    with self._lock:
                        self.dropped += values
                    self._set_send_error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                    continue
                self.sent += values
                self._set_send_error(None)
            if self._send_error is not None:
                self._stop.wait(RETRY_S)  # what comes meanwhile goes with the next try

    def _set_send_error(self, error: str | None) -> None:
        if error is not None and self._send_error is None:
            log.error("live values not shared with the other replicas, Redis unreachable: %s", error)
        self._send_error = error

    # -- every replica's values in ------------------------------------------------------------

    def _listen_loop(self) -> None:
        was_down = False
        while not self._stop.is_set():
            try:
                pubsub = self._client().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._channel)
                if was_down:
                    log.info("live values shared again: Redis answers")
                    self._on_resume()
                was_down = False
                self._listen_error = None
                self._send_error = None  # Redis answers: the next publish tells if it still fails
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=POLL_S)
                    if message is not None and message.get("type") == "message":
                        self._deliver(message["data"])
                pubsub.close()
            except (RedisError, OSError) as exc:
                error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if not was_down:
                    log.error("live values from the other replicas paused, Redis unreachable: %s", error)
                was_down = True
                self._listen_error = error
                self._stop.wait(RETRY_S)

    def _deliver(self, data: Any) -> None:
        try:
            message = decode(data)
        except ValueError as exc:
            log.warning("live values message ignored: %s", exc)
            return
        try:
            if isinstance(message, RemovedDevices):
                self._forget(message)
            else:
                self.received += len(message)
                self._receive(message)
        except Exception:  # the listener must outlive a bug in one delivery
            log.exception("a live message from Redis could not be delivered")

    # -- life ---------------------------------------------------------------------------------

    @property
    def problem(self) -> str | None:
        """Why live values are not shared right now (one line), or ``None`` when they are."""
        error = self._listen_error or self._send_error
        if error is None:
            return None
        return f"live updates paused (Redis: {error}); values are still stored"

    def start(self) -> None:
        """Start the sender and the listener (daemon threads)."""
        if self._threads:
            return
        self._stop.clear()
        loops = {"portal-fanout-send": self._send_loop, "portal-fanout-listen": self._listen_loop}
        for name, target in loops.items():
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop both threads (waiting a little for each)."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(POLL_S + 1.0)
        self._threads = []


def _messages(waiting: list[Sequence[LatestValue] | RemovedDevices]) -> list[tuple[bytes, int]]:
    """What to publish, in order: each run of value batches as one message, each removal as one;
    with the number of values in each."""
    messages: list[tuple[bytes, int]] = []
    values: list[LatestValue] = []
    for item in waiting:
        if isinstance(item, RemovedDevices):
            if values:
                messages.append((encode(values), len(values)))
                values = []
            messages.append((encode_removal(item), 0))
        else:
            values.extend(item)
    if values:
        messages.append((encode(values), len(values)))
    return messages
