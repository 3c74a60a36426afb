"""The application factory: builds the portal and binds its parts together.

::

    broker --MQTT--> Ingest --queue--> BatchWriter --Store--> PostgreSQL
                                            |
                                            +--> Live --Socket.IO--> browsers

With ``REDIS_URL`` set (several replicas behind one address), the writer hands what it committed to
:mod:`web.fanout`, which brings every replica's values to each replica's ``Live``; snapshots read the
``latest`` table, and events for everybody go through Flask-SocketIO's message queue on that Redis.

Nothing runs at import time. :func:`create_app` reads the settings (unless given), creates the
engine (no connection yet), the queue, the writer's threads (feeder and committer), the live
flusher, the retention rounds (``web/retention.py``) and the MQTT client thread, registers the
HTTP routes and Socket.IO handlers, and starts the threads. It succeeds while the broker or the
database is down: the threads keep retrying and ``/readyz`` says what is missing.
"""

from __future__ import annotations

import atexit
import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from flask import Flask, Response
from flask_socketio import SocketIO

from web import api, auth, health, pages, vendor
from web.alarms import Alarms, AlarmStore
from web.buffer import ReadingBuffer
from web.cache import LatestCache
from web.fanout import SOCKETIO_CHANNEL, Fanout, RemovedDevices, newest_only
from web.ingest import Ingest
from web.live import SITE_ROOM, STATUS_EVENT, JsonPacket, Live
from web.logs import configure_logging
from web.metrics import Metrics
from web.portal import EXTENSION, Portal
from web.quota import DeviceQuota
from web.removal import Removal, Selection
from web.retention import Retention
from web.sessions import SessionKeeper
from web.settings import Settings
from web.snapshots import cache_snapshot, cached, newest_of, store_snapshot
from web.socket_writes import WholeWrites
from web.status import StatusWatch
from web.storage import Store, make_engine
from web.takeover import Acknowledgements, StandIns
from web.units import load_units
from web.writer import BatchWriter

log = logging.getLogger(__name__)

_SECURITY_HEADERS = {
    # Everything the pages load comes from the portal itself; no inline scripts or styles.
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def create_app(settings: Settings | None = None) -> Flask:
    """Build the portal.

    Args:
        settings: the configuration; read from the environment (and ``.env``) when omitted.

    Raises:
        web.settings.SettingsError: the environment lacks a required variable (one-line message).
    """
    configure_logging()
    if settings is None:
        settings = Settings.from_env()

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.portal_secret_key.get_secret_value(),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    redis_url = None if settings.redis_url is None else settings.redis_url.get_secret_value()
    # With replicas, events for everybody (alarms, device notices, removals) go through Redis.
    queue = {} if redis_url is None else {"message_queue": redis_url, "channel": SOCKETIO_CHANNEL}
    socketio = SocketIO(
        app, async_mode=async_mode(), serializer=JsonPacket, logger=False, engineio_logger=False, **queue
    )
    app.wsgi_app = WholeWrites(app.wsgi_app)  # type: ignore[method-assign]  # outermost, before Socket.IO

    engine = make_engine(settings)
    store = Store(engine)
    buffer = ReadingBuffer(settings.ingest_buffer_max)
    cache = LatestCache()
    metrics = Metrics()
    live = Live(
        socketio,
        # Replicas: the `latest` table holds what every replica committed, whatever Redis missed;
        # the cache what was pushed live and not yet committed (web.fanout).
        newest_of(store_snapshot(store.latest_values), cached(cache))
        if redis_url is not None
        else cache_snapshot(cache, store_snapshot(store.latest_values)),
        metrics,
        flush_interval_s=settings.portal_live_flush_ms / 1000,
        token_user=auth.token_user,
    )
    quota = DeviceQuota(
        settings.portal_max_devices_per_room, settings.portal_max_devices, on_new=live.devices_changed
    )
    metrics.track_devices(lambda: quota.devices)
    # Alarm messages go to `portal.alarms` (web.alarms) once it is set; until then they are counted.
    ingest = Ingest(settings, buffer, metrics, alarms=lambda: getattr(portal, "alarms", None), quota=quota)
    acknowledgements = Acknowledgements(ingest)
    fanout = None if redis_url is None else _fanout(redis_url, cache, live, lambda: portal.removal)
    writer = BatchWriter(
        store,
        buffer,
        live.publish if fanout is None else fanout.send,
        acknowledge=acknowledgements,
        cache=cache,
        on_load=quota.load,
        metrics=metrics,
        batch_max=settings.ingest_batch_max,
        linger_s=settings.ingest_linger_ms / 1000,
    )
    status = StatusWatch(
        ingest,
        writer,
        store,
        waiting=lambda: len(buffer) + writer.waiting,
        emit=lambda seen: live.send(STATUS_EVENT, seen.as_json(), to=SITE_ROOM),
        live_problem=(lambda: None) if fanout is None else (lambda: fanout.problem),
        replica=settings.portal_replica or "",
    )
    live.status_of = status.as_json
    portal = Portal(
        settings=settings,
        engine=engine,
        store=store,
        buffer=buffer,
        cache=cache,
        ingest=ingest,
        writer=writer,
        socketio=socketio,
        live=live,
        metrics=metrics,
        removal=Removal(
            engine, store=store, cache=cache, quota=quota, live=live, ingest=ingest, root=settings.topic_root
        ),
        status=status,
        retention=Retention(engine, settings.retention_days, on_round=metrics.count_retention),
        units=load_units(),
        alarms=Alarms(AlarmStore(engine), socketio, metrics, room=SITE_ROOM, allows=quota.allows),
        fanout=fanout,
        takeover=StandIns(
            engine,
            settings.mqtt_client_id,
            settings.share_peers,
            stand_in=lambda peer: Ingest(
                settings.model_copy(update={"mqtt_client_id": peer}),
                buffer,
                metrics,
                alarms=lambda: portal.alarms,
                quota=quota,
                stand_in=True,
            ),
            acknowledgements=acknowledgements,
            idle=lambda: len(buffer) == 0 and writer.waiting == 0,
        ),
    )
    app.extensions[EXTENSION] = portal
    if fanout is not None:
        portal.removal.share = fanout.removed
    metrics.track_buffer(lambda: len(buffer) + portal.writer.waiting)

    app.register_blueprint(health.bp)
    auth_state = auth.init_app(app, settings, engine)
    auth_state.on_sign_out.append(live.end_session)
    portal.keeper = SessionKeeper(lambda: _check_sessions(portal, auth_state))
    api.init_app(app)
    app.register_blueprint(pages.bp)
    app.register_blueprint(vendor.bp)
    app.after_request(_add_security_headers)
    vendor.check_installed()

    portal.start()
    atexit.register(portal.stop)
    _stop_with_server(portal)
    log.info(
        "portal started mqtt=%s:%s postgres=%s:%s topic_root=%s retention_days=%s",
        settings.mqtt_host,
        settings.mqtt_port,
        settings.postgres_host,
        settings.postgres_port,
        settings.topic_root,
        settings.retention_days or "all",
    )
    return app


def _fanout(redis_url: str, cache: LatestCache, live: Live, removal: Callable[[], Removal]) -> Fanout:
    """Live values and removals of every replica, through Redis, into this one's."""

    def forget(removed: RemovedDevices) -> None:
        removal().forget(Selection(**removed.selection), removed.devices)

    def resume() -> None:
        # Snapshots read the database: off the listener's thread, which must go on receiving.
        live.socketio.start_background_task(live.resnapshot)

    return Fanout(redis_url, newest_only(cache, live.publish), forget=forget, on_resume=resume)


def _check_sessions(portal: Portal, auth_state: auth.AuthState) -> None:
    """Close live connections whose session or token ended elsewhere; delete idle sessions."""
    portal.live.recheck(auth_state.sessions.alive, auth_state.accounts.live_tokens)
    auth_state.sessions.sweep()


def async_mode() -> str:
    """``gevent`` under a server that patched the standard library for it, ``threading`` otherwise.

    gunicorn's gevent worker (how ``./lab`` and the container serve the portal) patches sockets,
    threads and locks before it loads the app; the portal's own threads then run as greenlets, and
    Socket.IO must use gevent's primitives too. Tests build the app in plain threads.
    """
    monkey = sys.modules.get("gevent.monkey")
    return "gevent" if monkey is not None and monkey.is_module_patched("socket") else "threading"


def _add_security_headers(response: Response) -> Response:
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _stop_with_server(portal: Portal) -> None:
    """Begin stopping the portal as soon as the server (gunicorn) is told to stop.

    gunicorn gives a worker ``--graceful-timeout`` seconds after SIGTERM, waits that long for open
    connections (live websockets stay open), then kills it: ``atexit`` would come too late to
    store the queued readings. So the server's SIGTERM handler is wrapped to start
    :meth:`Portal.stop` in the background at once (a thread, or a greenlet under gevent, where a
    signal handler must not block). Outside a server that handles SIGTERM, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        portal.socketio.start_background_task(portal.stop)
        previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    # signal.signal() makes the signal interrupt system calls again; gunicorn had turned that off.
    signal.siginterrupt(signal.SIGTERM, False)
