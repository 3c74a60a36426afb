"""An emulator of ThingsBoard CE's documented REST and device APIs, for tests.

ThingsBoard cannot run on the test machine, so ``stress`` is tested against this. It follows
ThingsBoard's documentation (REST API for tenant administrators, MQTT device API, gateway MQTT
API, HTTP device API) for what ``stress`` uses:

* REST: ``POST /api/auth/login`` and ``/api/auth/token`` (JWTs with ``exp``; an expired one is
  401 with errorCode 11), ``X-Authorization: Bearer``; devices listed by page with
  ``textSearch`` (case-insensitive "contains") or looked up by ``deviceName``; created with
  ``POST /api/device?accessToken=`` (a duplicate name is 400 errorCode 31), read, deleted,
  their credentials read; server-scope attributes; device profiles; two-way RPC. Errors have
  ThingsBoard's shape ``{"status", "message", "errorCode", "timestamp"}``.
* MQTT (see :mod:`tests.tbemu.mqtt`): the token as user name, one session per token,
  ``v1/devices/me/telemetry`` (``{"ts", "values"}``, a flat object, or a list), RPC on
  ``v1/devices/me/rpc/request/+`` and ``.../response/<id>``, the gateway API
  (``v1/gateway/connect``, ``disconnect``, ``telemetry``, ``rpc``).
* HTTP device API: ``POST /api/v1/<token>/telemetry``.
* Rate limits (``set_rate_limit("capacity:seconds,...")``, ThingsBoard's format, per device),
  answered as ThingsBoard's transports answer them: over HTTP a 429; a device over MQTT has
  its connection closed (MQTT 5: DISCONNECT 0x83 "implementation specific error" first, the
  code ThingsBoard sends for any publish it fails to process); a device behind a gateway gets
  a PUBACK 0x97 "quota exceeded" (MQTT 5) and the gateway's connection is closed.

Left out: customers, assets, dashboards, rule chains, other credential types, attributes
other than server-side, WebSocket subscriptions. Failures can be injected with ``fail_next``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, request
from werkzeug.serving import make_server

from tests.tbemu.mqtt import Connection, Server

PROFILES = {"default": str(uuid.uuid4()), "thermostat-profile": str(uuid.uuid4())}


@dataclass
class EmulatedDevice:
    """A device as the emulator holds it."""

    id: str
    name: str
    type: str
    profile_id: str
    token: str
    server_attributes: dict[str, Any] = field(default_factory=dict)
    gateway: bool = False
    created_time: int = 0

    def json(self) -> dict[str, Any]:
        return {
            "id": {"entityType": "DEVICE", "id": self.id},
            "createdTime": self.created_time,
            "tenantId": {"entityType": "TENANT", "id": TENANT},
            "customerId": {"entityType": "CUSTOMER", "id": "13814000-1dd2-11b2-8080-808080808080"},
            "name": self.name,
            "type": self.type,
            "label": "",
            "deviceProfileId": {"entityType": "DEVICE_PROFILE", "id": self.profile_id},
            "additionalInfo": {"gateway": self.gateway},
        }


TENANT = str(uuid.uuid4())


def _jwt(subject: str, ttl: float, kind: str) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {
        "sub": subject,
        "scopes": ["TENANT_ADMIN"],
        "iat": now,
        "exp": now + int(ttl),
        "kind": kind,
        "jti": secrets.token_hex(8),
    }
    return f"{part({'alg': 'HS512'})}.{part(claims)}.{secrets.token_urlsafe(32)}"


class Bucket:
    """One ``capacity:seconds`` token bucket."""

    def __init__(self, capacity: int, seconds: float) -> None:
        self.capacity, self.seconds = capacity, seconds
        self.times: deque[float] = deque()

    def take(self, now: float) -> bool:
        while self.times and now - self.times[0] >= self.seconds:
            self.times.popleft()
        if len(self.times) >= self.capacity:
            return False
        self.times.append(now)
        return True


def _error(status: int, message: str, code: int) -> Response:
    body = {"status": status, "message": message, "errorCode": code, "timestamp": int(time.time() * 1000)}
    return Response(json.dumps(body), status=status, mimetype="application/json")


class Emulator:
    """``with Emulator(username, password, token_ttl_s) as tb``: REST at ``tb.url``, MQTT at
    ``tb.mqtt_host:tb.mqtt_port``."""

    def __init__(self, username: str, password: str, token_ttl_s: float = 9000.0) -> None:
        self.username, self.password, self.ttl = username, password, token_ttl_s
        self._lock = threading.RLock()
        self._devices: dict[str, EmulatedDevice] = {}  # by id
        self._telemetry: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._via_gateway: dict[str, Connection] = {}
        self._issued: dict[str, float] = {}  # JWT -> expiry
        self._failures: list[tuple[int, int, str, str]] = []
        self._limit: list[tuple[int, float]] | None = None
        self._buckets: dict[str, list[Bucket]] = {}
        self._rpc_waiters: dict[tuple[str, str], tuple[threading.Event, list[Any]]] = {}
        self._rpc_id = 0
        self.requests: list[tuple[str, str]] = []
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "logins",
                "refreshes",
                "devices_created",
                "telemetry_messages",
                "rate_limited",
                "connack_refused",
                "expired_rejected",
            ),
            0,
        )
        self.mqtt_host = "127.0.0.1"
        self._loop = asyncio.new_event_loop()
        self._mqtt = Server(self._known_token, self._on_publish, self._on_session, self._refused)
        started = threading.Event()
        ports: list[int] = []

        def serve_mqtt() -> None:
            asyncio.set_event_loop(self._loop)
            ports.append(self._loop.run_until_complete(self._mqtt.start()))
            started.set()
            self._loop.run_forever()

        self._mqtt_thread = threading.Thread(target=serve_mqtt, daemon=True)
        self._mqtt_thread.start()
        started.wait(5)
        self.mqtt_port = ports[0]
        self._http = make_server("127.0.0.1", 0, self._app(), threaded=True)
        self.url = f"http://127.0.0.1:{self._http.server_port}"
        self._http_thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._http_thread.start()

    # ------------------------------------------------------------------ test-facing

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.shutdown()
        self._http_thread.join(5)
        asyncio.run_coroutine_threadsafe(self._mqtt.stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._mqtt_thread.join(5)

    def devices(self) -> list[EmulatedDevice]:
        with self._lock:
            return sorted(self._devices.values(), key=lambda d: (d.created_time, d.name))

    def device(self, name: str) -> EmulatedDevice | None:
        with self._lock:
            return next((d for d in self._devices.values() if d.name == name), None)

    def telemetry(self, name: str) -> list[tuple[int, dict[str, Any]]]:
        with self._lock:
            return list(self._telemetry.get(name, []))

    def connected(self, name: str) -> bool:
        device = self.device(name)
        if device is None:
            return False
        with self._lock:
            if name in self._via_gateway:
                return True
            return device.token in self._mqtt.sessions

    @property
    def sessions_taken_over(self) -> int:
        return self._mqtt.taken_over

    def expire_tokens(self) -> None:
        with self._lock:
            for token in self._issued:
                if not token.startswith("refresh:"):  # refresh tokens live longer
                    self._issued[token] = 0.0

    def fail_next(self, count: int, status: int, body: str | bytes = "", path: str = "") -> None:
        """The next ``count`` REST requests under ``path`` answer ``status`` and ``body`` (0 clears)."""
        text = body.decode() if isinstance(body, bytes) else body
        with self._lock:
            self._failures = [(count, status, text, path)] if count else []

    def set_rate_limit(self, per_device: str | None) -> None:
        with self._lock:
            self._buckets.clear()
            self._limit = None
            if per_device:
                self._limit = [(int(c), float(s)) for c, s in (p.split(":") for p in per_device.split(","))]

    def rpc(self, name: str, method: str, params: Any, timeout_s: float = 5.0) -> dict[str, Any] | None:
        """Two-way server-side RPC to ``name``: its answer, or None after ``timeout_s``."""
        with self._lock:
            self._rpc_id += 1
            request_id = str(self._rpc_id)
            waiter: tuple[threading.Event, list[Any]] = (threading.Event(), [])
            self._rpc_waiters[(name, request_id)] = waiter
            device = self.device(name)
            gateway = self._via_gateway.get(name)
            direct = self._mqtt.sessions.get(device.token) if device else None
        body = {"method": method, "params": params}
        if gateway is not None:
            data = {"device": name, "data": {"id": int(request_id), **body}}
            self._loop.call_soon_threadsafe(gateway.publish, "v1/gateway/rpc", json.dumps(data).encode())
        elif direct is not None:
            topic = f"v1/devices/me/rpc/request/{request_id}"
            self._loop.call_soon_threadsafe(direct.publish, topic, json.dumps(body).encode())
        else:
            return None
        waiter[0].wait(timeout_s)
        with self._lock:
            self._rpc_waiters.pop((name, request_id), None)
        return waiter[1][0] if waiter[1] else None

    # ------------------------------------------------------------------ device side

    def _known_token(self, token: str) -> bool:
        with self._lock:
            return any(d.token == token for d in self._devices.values())

    def _refused(self) -> None:
        self.stats["connack_refused"] += 1

    def _on_session(self, conn: Connection, opened: bool) -> None:
        if not opened:
            with self._lock:
                for name in [n for n, c in self._via_gateway.items() if c is conn]:
                    del self._via_gateway[name]

    def _by_token(self, token: str) -> EmulatedDevice | None:
        return next((d for d in self._devices.values() if d.token == token), None)

    def _allowed(self, name: str) -> bool:
        """Whether the device's rate limit takes one more message."""
        if self._limit is None:
            return True
        buckets = self._buckets.setdefault(name, [Bucket(c, s) for c, s in self._limit])
        now = time.monotonic()
        if all(b.take(now) for b in buckets):
            return True
        self.stats["rate_limited"] += 1
        return False

    def _store(self, name: str, payload: Any) -> bool:
        """Telemetry in any of ThingsBoard's forms; False when it is not one of them."""
        rows = payload if isinstance(payload, list) else [payload]
        stored = []
        for row in rows:
            if not isinstance(row, dict):
                return False
            if "ts" in row and "values" in row:
                if not isinstance(row["values"], dict) or not isinstance(row["ts"], int):
                    return False
                stored.append((row["ts"], row["values"]))
            else:
                stored.append((int(time.time() * 1000), row))
        self._telemetry.setdefault(name, []).extend(stored)
        self.stats["telemetry_messages"] += 1
        return True

    def _on_publish(self, conn: Connection, topic: str, payload: bytes, qos: int, packet_id: int) -> None:
        reason = 0
        with self._lock:
            device = self._by_token(conn.token)
            if device is None:
                conn.close()
                return
            try:
                data = json.loads(payload)
            except ValueError:
                conn.close()  # ThingsBoard closes a session that sends a payload it cannot parse
                return
            if topic == "v1/devices/me/telemetry":
                if not self._allowed(device.name):
                    conn.disconnect(0x83)
                    return
                if not self._store(device.name, data):
                    conn.close()
                    return
            elif topic.startswith("v1/devices/me/rpc/response/"):
                self._answer(device.name, topic.rsplit("/", 1)[1], data)
            elif topic.startswith("v1/gateway/") and device.gateway and isinstance(data, dict):
                reason = self._on_gateway(conn, topic, data)
                if reason:
                    conn.puback(packet_id, reason)
                    conn.close()
                    return
        if qos:
            conn.puback(packet_id, reason)

    def _on_gateway(self, conn: Connection, topic: str, data: dict[str, Any]) -> int:
        """A message of the gateway API; the PUBACK reason (0x97 when a device is over its limit)."""
        reason = 0
        if topic == "v1/gateway/connect":
            self._gateway_device(str(data.get("device")), str(data.get("type") or "default"))
            self._via_gateway[str(data.get("device"))] = conn
        elif topic == "v1/gateway/disconnect":
            self._via_gateway.pop(str(data.get("device")), None)
        elif topic == "v1/gateway/telemetry":
            for name, rows in data.items():
                self._gateway_device(name, "default")
                if self._allowed(name):
                    self._store(name, rows)
                else:
                    reason = 0x97
        elif topic == "v1/gateway/rpc":
            self._answer(str(data.get("device")), str(data.get("id")), data.get("data"))
        return reason

    def _gateway_device(self, name: str, kind: str) -> None:
        if self.device(name) is None:
            self._create(name, PROFILES["default"], kind, None, gateway=False)

    def _answer(self, name: str, request_id: str, data: Any) -> None:
        waiter = self._rpc_waiters.get((name, request_id))
        if waiter is not None:
            waiter[1].append(data)
            waiter[0].set()

    # ------------------------------------------------------------------ REST

    def _create(
        self, name: str, profile_id: str, kind: str, token: str | None, *, gateway: bool
    ) -> EmulatedDevice:
        device = EmulatedDevice(
            id=str(uuid.uuid4()),
            name=name,
            type=kind,
            profile_id=profile_id,
            token=token or secrets.token_urlsafe(15)[:20],
            gateway=gateway,
            created_time=int(time.time() * 1000),
        )
        self._devices[device.id] = device
        self.stats["devices_created"] += 1
        return device

    def _app(self) -> Flask:
        app = Flask("thingsboard-emulator")

        @app.before_request
        def record_and_fail() -> Response | None:
            with self._lock:
                self.requests.append((request.method, request.path))
                if self._failures:
                    count, status, body, path = self._failures[0]
                    if request.path.startswith(path):
                        self._failures = [(count - 1, status, body, path)] if count > 1 else []
                        kind = "application/json" if body.startswith("{") else "text/html"
                        return Response(body, status=status, mimetype=kind)
            if request.path.startswith("/api/v1/") or request.path in ("/api/auth/login", "/api/auth/token"):
                return None
            header = request.headers.get("X-Authorization", "")
            token = header.removeprefix("Bearer ")
            with self._lock:
                expiry = self._issued.get(token)
            if not header.startswith("Bearer ") or expiry is None:
                return _error(401, "Authentication failed", 10)
            if expiry < time.time():
                self.stats["expired_rejected"] += 1
                return _error(401, "Token has expired", 11)
            return None

        def pair() -> Response:
            token, refresh = (
                _jwt(self.username, self.ttl, "access"),
                _jwt(self.username, self.ttl * 7, "refresh"),
            )
            with self._lock:
                self._issued[token] = time.time() + self.ttl
                self._issued["refresh:" + refresh] = time.time() + self.ttl * 7
            return Response(
                json.dumps({"token": token, "refreshToken": refresh}), mimetype="application/json"
            )

        @app.post("/api/auth/login")
        def login() -> Response:
            body = request.get_json(silent=True) or {}
            if body.get("username") != self.username or body.get("password") != self.password:
                return _error(401, "Invalid username or password", 10)
            self.stats["logins"] += 1
            return pair()

        @app.post("/api/auth/token")
        def refresh() -> Response:
            body = request.get_json(silent=True) or {}
            with self._lock:
                expiry = self._issued.get("refresh:" + str(body.get("refreshToken")))
            if expiry is None:
                return _error(401, "Invalid refresh token", 10)
            if expiry < time.time():
                return _error(401, "Token has expired", 11)
            self.stats["refreshes"] += 1
            return pair()

        def page(items: list[dict[str, Any]]) -> Response:
            try:
                size, number = int(request.args["pageSize"]), int(request.args["page"])
                if size < 1 or number < 0:
                    raise ValueError
            except (KeyError, ValueError):
                return _error(400, "pageSize and page are required", 31)
            chunk = items[number * size : (number + 1) * size]
            total = len(items)
            return Response(
                json.dumps(
                    {
                        "data": chunk,
                        "totalPages": -(-total // size),
                        "totalElements": total,
                        "hasNext": (number + 1) * size < total,
                    }
                ),
                mimetype="application/json",
            )

        @app.get("/api/tenant/devices")
        def list_devices() -> Response:
            name = request.args.get("deviceName")
            if name is not None:
                device = self.device(name)
                if device is None:
                    return _error(404, "Requested item wasn't found!", 32)
                return Response(json.dumps(device.json()), mimetype="application/json")
            text = request.args.get("textSearch", "").lower()
            found = sorted((d for d in self.devices() if text in d.name.lower()), key=lambda d: d.name)
            return page([d.json() for d in found])

        @app.post("/api/device")
        def create() -> Response:
            body = request.get_json(silent=True)
            if not isinstance(body, dict) or not body.get("name"):
                return _error(400, "Device name should be specified!", 31)
            token = request.args.get("accessToken")
            profile = (body.get("deviceProfileId") or {}).get("id") or PROFILES["default"]
            kind = next((n for n, i in PROFILES.items() if i == profile), None)
            if kind is None:
                return _error(400, "Device profile is referencing to non-existent device profile!", 31)
            with self._lock:
                if self.device(body["name"]) is not None:
                    return _error(400, "Device with such name already exists!", 31)
                if token and self._by_token(token) is not None:
                    return _error(400, "Device credentials are already assigned to another device!", 31)
                gateway = bool((body.get("additionalInfo") or {}).get("gateway"))
                device = self._create(body["name"], profile, kind, token, gateway=gateway)
            return Response(json.dumps(device.json()), mimetype="application/json")

        def find(device_id: str) -> EmulatedDevice | None:
            with self._lock:
                return self._devices.get(device_id)

        @app.get("/api/device/<device_id>")
        def read(device_id: str) -> Response:
            device = find(device_id)
            if device is None:
                return _error(404, "Requested item wasn't found!", 32)
            return Response(json.dumps(device.json()), mimetype="application/json")

        @app.delete("/api/device/<device_id>")
        def delete(device_id: str) -> Response:
            with self._lock:
                device = self._devices.pop(device_id, None)
            if device is None:
                return _error(404, "Requested item wasn't found!", 32)
            session = self._mqtt.sessions.get(device.token)
            if session is not None:
                self._loop.call_soon_threadsafe(session.close)
            return Response(status=200)

        @app.get("/api/device/<device_id>/credentials")
        def credentials(device_id: str) -> Response:
            device = find(device_id)
            if device is None:
                return _error(404, "Requested item wasn't found!", 32)
            body = {
                "id": {"id": str(uuid.uuid4())},
                "deviceId": {"entityType": "DEVICE", "id": device.id},
                "credentialsType": "ACCESS_TOKEN",
                "credentialsId": device.token,
                "credentialsValue": None,
            }
            return Response(json.dumps(body), mimetype="application/json")

        @app.post("/api/plugins/telemetry/DEVICE/<device_id>/attributes/SERVER_SCOPE")
        @app.post("/api/plugins/telemetry/DEVICE/<device_id>/SERVER_SCOPE")
        def attributes(device_id: str) -> Response:
            device = find(device_id)
            body = request.get_json(silent=True)
            if device is None:
                return _error(404, "Requested item wasn't found!", 32)
            if not isinstance(body, dict):
                return _error(400, "Invalid request body", 31)
            with self._lock:
                device.server_attributes.update(body)
            return Response(status=200)

        @app.get("/api/deviceProfileInfo/default")
        def default_profile() -> Response:
            return Response(
                json.dumps(
                    {
                        "id": {"entityType": "DEVICE_PROFILE", "id": PROFILES["default"]},
                        "name": "default",
                        "type": "DEFAULT",
                    }
                ),
                mimetype="application/json",
            )

        @app.get("/api/deviceProfileInfos")
        def profiles() -> Response:
            text = request.args.get("textSearch", "").lower()
            return page(
                [
                    {"id": {"entityType": "DEVICE_PROFILE", "id": i}, "name": n, "type": "DEFAULT"}
                    for n, i in PROFILES.items()
                    if text in n.lower()
                ]
            )

        @app.post("/api/v1/<token>/telemetry")
        def http_telemetry(token: str) -> Response:
            with self._lock:
                device = self._by_token(token)
                if device is None:
                    return Response(status=401)
                try:
                    data = json.loads(request.get_data())
                except ValueError:
                    return _error(400, "Invalid JSON", 31)
                if not self._allowed(device.name):
                    return _error(429, "Rate limits for device were exceeded!", 33)
                if not self._store(device.name, data):
                    return _error(400, "Invalid telemetry", 31)
            return Response(status=200)

        return app
