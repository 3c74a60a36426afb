"""A ThingsBoard REST client for the tenant administrator: login, token refresh, retries.

It signs in with ``POST /api/auth/login`` and sends the JWT as ``X-Authorization: Bearer``.
The token is refreshed (``POST /api/auth/token``) a minute before it expires (at half its
life when that is shorter), and again when the server answers 401 "Token has expired"
(errorCode 11); a refresh that is refused signs in again. Connection errors, timeouts, 5xx
and 429 answers are retried with jittered exponential backoff (429's ``Retry-After``
honoured); other answers are final. Every failure the caller sees is a :class:`TbError`
whose message is one line that says what to do.

The client is safe to share between threads (each thread gets its own HTTP connection pool).
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import requests

from stress.thingsboard import TbError, check_url

#: Seconds before a token's expiry when it is refreshed (at most half its lifetime).
REFRESH_AHEAD_S = 60.0
#: ThingsBoard's errorCode for an expired token.
EXPIRED = 11
#: ThingsBoard's errorCode for "Requested item wasn't found".
NOT_FOUND = 32
#: ThingsBoard's errorCode for a bad request (a duplicate name, say).
BAD_REQUEST = 31
RETRIED_STATUS = frozenset({429, 500, 502, 503, 504})


def token_times(token: str) -> tuple[float, float] | None:
    """``(iat, exp)`` (epoch seconds) of a JWT, read without checking its signature; None if unreadable."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        expiry = float(claims["exp"])
        return float(claims.get("iat", expiry - 2 * REFRESH_AHEAD_S)), expiry
    except (IndexError, ValueError, KeyError, TypeError, binascii.Error):
        return None


def _error_text(response: requests.Response) -> tuple[str, int | None]:
    """ThingsBoard's error message and errorCode from an error answer (or a short body)."""
    try:
        body = response.json()
    except ValueError:
        text = " ".join(response.text.split())[:120]
        return (text or response.reason or f"HTTP {response.status_code}"), None
    if isinstance(body, dict):
        code = body.get("errorCode")
        return str(body.get("message") or response.reason), code if isinstance(code, int) else None
    return str(body)[:120], None


class TbClient:
    """The REST API of one ThingsBoard server, as its tenant administrator."""

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        timeout: float = 10.0,
        retries: int = 5,
        backoff: float = 0.5,
    ) -> None:
        self.url = check_url(url)
        if not username or not password:
            raise TbError(
                "ThingsBoard needs a tenant administrator's user name and password: set TB_USERNAME and "
                "TB_PASSWORD (in .env or the environment) or pass --tb-username and --tb-password"
            )
        self.username = username
        self.password = password
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._token = ""
        self._refresh_token = ""
        self._expires = 0.0
        self._ahead = REFRESH_AHEAD_S
        self._auth_lock = threading.Lock()
        self._local = threading.local()
        #: Counters: requests sent, retried, token refreshes and logins.
        self.stats = {"requests": 0, "retries": 0, "refreshes": 0, "logins": 0}

    # ------------------------------------------------------------------ authentication

    def login(self) -> None:
        """Sign in; :class:`TbError` for a wrong user name or password, or an unreachable server."""
        answer = self._send(
            "POST", "/api/auth/login", json_body={"username": self.username, "password": self.password}
        )
        if answer.status_code == 401:
            raise TbError(
                f"ThingsBoard at {self.url} refused the login of {self.username!r}: wrong user name or "
                "password (TB_USERNAME, TB_PASSWORD)",
                401,
                _error_text(answer)[1],
            )
        self._take_tokens(self._json(answer, "POST /api/auth/login", ok=(200,)))
        self.stats["logins"] += 1

    def _take_tokens(self, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("token"), str):
            raise TbError(f"ThingsBoard at {self.url} answered the login without a token: is TB_URL right?")
        self._token = body["token"]
        self._refresh_token = str(body.get("refreshToken") or "")
        times = token_times(self._token)
        issued, self._expires = times if times is not None else (time.time(), time.time() + 15 * 60)
        self._ahead = min(REFRESH_AHEAD_S, (self._expires - issued) / 2)

    def _refresh(self, stale: str) -> None:
        """A new token (``stale`` is the one the caller saw: another thread may have renewed it)."""
        with self._auth_lock:
            if self._token != stale:
                return
            if self._refresh_token:
                answer = self._send(
                    "POST", "/api/auth/token", json_body={"refreshToken": self._refresh_token}
                )
                if answer.status_code == 200:
                    self._take_tokens(self._json(answer, "POST /api/auth/token", ok=(200,)))
                    self.stats["refreshes"] += 1
                    return
            self.login()

    def _bearer(self) -> str:
        """The current token, renewed first when it expires within a minute."""
        token = self._token
        if not token:
            with self._auth_lock:
                if not self._token:
                    self.login()
            return self._token
        if time.time() >= self._expires - self._ahead:
            self._refresh(token)
        return self._token

    # ------------------------------------------------------------------ requests

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        token: str | None = None,
    ) -> requests.Response:
        """One request, retried on connection errors, timeouts, 5xx and 429."""
        headers = {"Accept": "application/json"}
        if token:
            headers["X-Authorization"] = f"Bearer {token}"
        what = f"{method} {path}"
        for attempt in range(self.retries + 1):
            self.stats["requests"] += 1
            try:
                answer = self._session().request(
                    method,
                    self.url + path,
                    params=params,
                    json=json_body,
                    headers=headers,
                    timeout=self.timeout,
                )
            except requests.exceptions.InvalidURL as exc:
                raise TbError(f"TB_URL {self.url!r} is not a usable URL: {exc}") from None
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == self.retries:
                    kind = "no answer in time" if isinstance(exc, requests.Timeout) else "cannot connect"
                    raise TbError(
                        f"cannot reach ThingsBoard at {self.url} ({kind}, {self.retries + 1} tries of "
                        f"{what}): check TB_URL and that the server is up"
                    ) from None
                self._pause(attempt, None)
                continue
            if answer.status_code in RETRIED_STATUS and attempt < self.retries:
                self._pause(attempt, answer.headers.get("Retry-After"))
                continue
            return answer
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _pause(self, attempt: int, retry_after: str | None) -> None:
        self.stats["retries"] += 1
        delay = self.backoff * 2**attempt * (0.5 + random.random())
        if retry_after and retry_after.strip().isdigit():
            delay = max(delay, min(float(retry_after), 60.0))
        time.sleep(min(delay, 30.0))

    def _json(self, answer: requests.Response, what: str, ok: tuple[int, ...] = (200,)) -> Any:
        """The JSON body of a successful answer; :class:`TbError` for anything else."""
        if answer.status_code not in ok:
            message, code = _error_text(answer)
            extra = " after retries" if answer.status_code in RETRIED_STATUS else ""
            raise TbError(
                f"ThingsBoard refused {what}{extra}: HTTP {answer.status_code} {message}",
                answer.status_code,
                code,
            )
        if not answer.content:
            return None
        try:
            return answer.json()
        except ValueError:
            kind = answer.headers.get("Content-Type", "unknown type").split(";")[0]
            raise TbError(
                f"ThingsBoard at {self.url} answered {what} with {kind}, not JSON: is TB_URL a ThingsBoard "
                "server (and not a proxy's error page)?",
                answer.status_code,
            ) from None

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        ok: tuple[int, ...] = (200,),
    ) -> Any:
        """An authenticated request; its JSON answer. Renews the token on 401 "expired" and retries once."""
        for renewed in (False, True):
            token = self._bearer()
            answer = self._send(method, path, params=params, json_body=json_body, token=token)
            if answer.status_code == 401 and not renewed:
                _message, code = _error_text(answer)
                if code == EXPIRED:
                    self._refresh(token)
                else:
                    with self._auth_lock:
                        if self._token == token:
                            self.login()
                continue
            return self._json(answer, f"{method} {path}", ok)
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ the API used here

    def device_by_name(self, name: str) -> dict[str, Any] | None:
        """The tenant's device named ``name``, or None."""
        try:
            found = self.call("GET", "/api/tenant/devices", params={"deviceName": name})
        except TbError as exc:
            if exc.status == 404:
                return None
            raise
        return found if isinstance(found, dict) else None

    def devices(self, text: str = "", page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every device of the tenant whose name contains ``text``, page by page."""
        page = 0
        while True:
            body = self.call(
                "GET",
                "/api/tenant/devices",
                params={
                    "pageSize": page_size,
                    "page": page,
                    "textSearch": text,
                    "sortProperty": "name",
                    "sortOrder": "ASC",
                },
            )
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                raise TbError(
                    f"ThingsBoard at {self.url} answered a device listing without data: is TB_URL right?"
                )
            yield from (device for device in body["data"] if isinstance(device, dict))
            if not body.get("hasNext"):
                return
            page += 1

    def create_device(
        self,
        name: str,
        *,
        token: str | None,
        profile_id: str | None,
        gateway: bool = False,
        label: str = "",
    ) -> dict[str, Any]:
        """Create a device (with ``token`` as its access token, when given)."""
        body: dict[str, Any] = {"name": name, "label": label, "additionalInfo": {"gateway": gateway}}
        if profile_id:
            body["deviceProfileId"] = {"entityType": "DEVICE_PROFILE", "id": profile_id}
        created = self.call(
            "POST", "/api/device", params={"accessToken": token} if token else None, json_body=body
        )
        if not isinstance(created, dict) or "id" not in created:
            raise TbError(f"ThingsBoard at {self.url} answered the creation of {name!r} without a device")
        return created

    def access_token(self, device_id: str) -> str:
        """A device's access token, from its credentials."""
        credentials = self.call("GET", f"/api/device/{device_id}/credentials")
        if not isinstance(credentials, dict) or credentials.get("credentialsType") != "ACCESS_TOKEN":
            kind = credentials.get("credentialsType") if isinstance(credentials, dict) else "none"
            raise TbError(f"device {device_id} has {kind} credentials, not an access token")
        return str(credentials["credentialsId"])

    def delete_device(self, device_id: str) -> None:
        """Delete a device (one already gone counts as deleted)."""
        try:
            self.call("DELETE", f"/api/device/{device_id}")
        except TbError as exc:
            if exc.status != 404:
                raise

    def save_server_attributes(self, device_id: str, attributes: Mapping[str, Any]) -> None:
        """Set server-side attributes of a device."""
        self.call(
            "POST",
            f"/api/plugins/telemetry/DEVICE/{device_id}/attributes/SERVER_SCOPE",
            json_body=dict(attributes),
        )

    def profile_id(self, name: str | None) -> str:
        """The id of the device profile called ``name`` (the tenant's default one when None)."""
        if name is None:
            body = self.call("GET", "/api/deviceProfileInfo/default")
            if isinstance(body, dict) and isinstance(body.get("id"), dict):
                return str(body["id"]["id"])
            raise TbError(f"ThingsBoard at {self.url} has no default device profile")
        body = self.call(
            "GET", "/api/deviceProfileInfos", params={"pageSize": 100, "page": 0, "textSearch": name}
        )
        for info in body.get("data", []) if isinstance(body, dict) else []:
            if isinstance(info, dict) and info.get("name") == name:
                return str(info["id"]["id"])
        raise TbError(
            f"ThingsBoard at {self.url} has no device profile named {name!r}: "
            "create it, or leave out --profile"
        )
