"""HAProxy's configuration in front of the portal replicas, for the native run and Compose.

One address (PORTAL_PORT) for every browser. HAProxy inserts a cookie naming the replica that
served a client's first request and sends the client back to it: Socket.IO keeps each client's
session in one replica's memory, and every client of the lab comes from 127.0.0.1, so hashing
the source address would put everyone on one replica. A replica that stops answering its
`/healthz` leaves the rotation within about two seconds; a request for a replica that is gone
is sent to a live one at once (`option redispatch 1`), which answers with a new cookie.

Each response names the replica that served it in an `X-Lab-Replica` header (the same name as
the cookie's and `./lab status`'s). Requests are not logged one by one: thousands of browsers
polling would flood the log, and the portal logs what goes wrong; HAProxy's own warnings (a
replica down or back) go to its standard error, so into `data/logs/front.log`.

The native run writes the file at each start; `haproxy/haproxy.cfg` is the Compose profile's,
written by `python -m labctl.front > haproxy/haproxy.cfg` (a test keeps it current).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

#: The cookie that keeps a browser on its replica; its value is the replica's name.
COOKIE = "lab-replica"
#: The response header naming the replica that served the request.
REPLICA_HEADER = "X-Lab-Replica"
#: Connections HAProxy holds at once. Each proxied one is two open files (browser side and
#: replica side), and a process may open 20,000 here: this leaves room for its own needs.
MAX_CONNECTIONS = 9000
#: What HAProxy asks each replica, and how often: two failed checks a second apart take a
#: replica out of the rotation, two good ones bring it back.
CHECK_PATH = "/healthz"
CHECK = "inter 1s fall 2 rise 2"
#: The Compose network's DNS server: replicas may come back with another address.
CONTAINER_RESOLVER = "127.0.0.11:53"
CONTAINER_PORT = 5000


@dataclass(frozen=True)
class Profile:
    """Where the front listens, the replicas behind it, and how HAProxy runs."""

    bind: str  # "address:port", or ":port" for every address
    replicas: tuple[tuple[str, str], ...]  # (name, "host:port") of each portal replica, in order
    user: str | None = None  # drop to this user and its group after binding (started by root)
    resolver: str | None = None  # a DNS server to follow the replicas' addresses (containers)


def container_profile(replicas: int = 2) -> Profile:
    """The Compose profile `replicas`: services web-1..N on the portal's container port."""
    names = [f"web-{number}" for number in range(1, replicas + 1)]
    return Profile(
        bind=f":{CONTAINER_PORT}",
        replicas=tuple((name, f"{name}:{CONTAINER_PORT}") for name in names),
        resolver=CONTAINER_RESOLVER,
    )


def render_config(profile: Profile) -> str:
    """haproxy.cfg for `profile`."""
    server_options = f"check {CHECK}"
    lines = [
        "# HAProxy in front of the portal replicas, rendered by labctl/front.py: edit that, not this.",
        "",
        "global",
        f"    maxconn {MAX_CONNECTIONS}",
    ]
    if profile.user:
        lines += [f"    user {profile.user}", f"    group {profile.user}"]
    if profile.resolver:
        server_options += " resolvers lab init-addr last,libc,none"
        lines += ["", "resolvers lab", f"    nameserver dns {profile.resolver}", "    hold valid 10s"]
    lines += [
        "",
        "defaults",
        "    mode http",
        f"    maxconn {MAX_CONNECTIONS}",
        "    option forwardfor",
        "    timeout connect 5s",
        # Socket.IO pings every 25 s and holds a long-polling request as long: well above both
        "    timeout client 75s",
        "    timeout server 75s",
        # once upgraded to a WebSocket, a quiet connection may stay open for an hour
        "    timeout tunnel 1h",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 10s",
        "    timeout client-fin 5s",
        "    timeout queue 10s",
        "",
        "frontend portal",
        f"    bind {profile.bind}",
        "    default_backend replicas",
        "",
        "backend replicas",
        "    balance roundrobin",
        f"    cookie {COOKIE} insert indirect nocache httponly",
        "    option redispatch 1",
        "    retries 2",
        f"    option httpchk GET {CHECK_PATH}",
        "    http-check expect status 200",
        f"    http-response set-header {REPLICA_HEADER} %[srv_name]",
    ]
    lines += [
        f"    server {name} {address} {server_options} cookie {name}" for name, address in profile.replicas
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    """Print the configuration of the Compose profile `replicas` (haproxy/haproxy.cfg)."""
    sys.stdout.write(render_config(container_profile()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
