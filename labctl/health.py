"""Health probes for the lab's services, using only the standard library.

Each probe returns None when healthy, or a short reason when not.
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request

from wire.mqtt import connect_packet

CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client id rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 2.0) -> str | None:
    """None if GET url answers 200; otherwise the problem a JSON answer names, or the status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - lab-local http URL
            return None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return _named_problem(exc) or f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"no answer ({reason})"


def _named_problem(answer: urllib.error.HTTPError) -> str | None:
    """What a JSON health answer says is wrong: Node-RED's ``problem``, the portal's failed ``checks``."""
    try:
        body = json.loads(answer.read(4096))
    except (ValueError, OSError):
        return None
    if not isinstance(body, dict):
        return None
    if body.get("problem"):
        return str(body["problem"])
    checks = body.get("checks")
    if isinstance(checks, dict):
        return "; ".join(f"{name}: {state}" for name, state in checks.items() if state != "ok") or None
    return None


def mqtt_connect(
    port: int, username: str, password: str, host: str = "127.0.0.1", timeout: float = 2.0
) -> str | None:
    """None if an MQTT 3.1.1 CONNECT with these credentials is accepted (CONNACK 0)."""
    packet = connect_packet(f"lab-health-{port}", username, password, keepalive=10)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(packet)
            reply = sock.recv(4)
            sock.sendall(b"\xe0\x00")  # DISCONNECT
    except OSError as exc:
        return f"no answer ({exc.strerror or exc})"
    if len(reply) < 4 or reply[0] != 0x20:
        return "not an MQTT broker"
    code = reply[3]
    return None if code == 0 else f"CONNACK {code}: {CONNACK_REASONS.get(code, 'refused')}"


def postgres_ready(pg_isready: str, port: int, host: str = "127.0.0.1") -> str | None:
    """None if PostgreSQL accepts connections on host:port."""
    result = subprocess.run(
        [pg_isready, "-q", "-h", host, "-p", str(port), "-t", "2"],
        check=False,
        capture_output=True,
    )
    return None if result.returncode == 0 else "not accepting connections"


def _redis_command(*words: str) -> bytes:
    """One Redis command in the protocol's array form (RESP)."""
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def redis_ping(port: int, password: str, host: str = "127.0.0.1", timeout: float = 2.0) -> str | None:
    """None if Redis takes `password` (AUTH) and answers PING; "password refused" when it does not."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_redis_command("AUTH", password) + _redis_command("PING"))
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
    except OSError as exc:
        return f"no answer ({exc.strerror or exc})"
    lines = reply.split(b"\r\n")
    if len(lines) < 3:
        return "not a Redis server"
    auth, ping = lines[0], lines[1]
    if auth.startswith((b"-WRONGPASS", b"-ERR AUTH")):
        return "password refused"
    if auth != b"+OK" or ping != b"+PONG":
        return (auth if auth != b"+OK" else ping).decode(errors="replace")[:80]
    return None
