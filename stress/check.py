"""``stress check``: is the target reachable, and does it take the credentials? One line says.

It connects once, as the run with the same flags would connect its first device (the lab's
fleet account, that device's own account from ``--credentials``, or ``--username``), waits for
the CONNACK and disconnects. It publishes nothing, so it leaves nothing in the lab's history.
"""

from __future__ import annotations

import asyncio
import time

from stress.behaviours import DeviceInfo
from stress.engine import new_loop, tls_context
from stress.mqtt.session import ConnectError, open_session, wait_closed
from stress.scenario import Scenario, device_name
from stress.targets import build

#: What to look at when the broker refuses, by the refusal's reason.
HINTS = {
    "connack-bad-credentials": "the user name and password",
    "connack-not-authorized": "the user name and password, and the account's rights",
    "connack-client-id-rejected": "the client id (--prefix)",
    "connack-bad-protocol-version": "--protocol",
    "tcp-refused": "--host and --port (is the broker running?)",
    "dns": "--host",
    "timeout": "--host, --port and any firewall",
    "tls-verify": "--ca-file (or --insecure for a self-signed lab)",
    "tls-handshake": "--tls and --port (is it the TLS listener?)",
}


class CheckError(Exception):
    """The target cannot be used as the run would use it; the message is one line."""


def check(scenario: Scenario) -> str:
    """One line saying that the target took the first device's connection; else ``CheckError``."""
    target = build(scenario)
    info = DeviceInfo(0, device_name(scenario.prefix, 0, scenario.devices), "room-01")
    options = target.connect_options(info)
    who = f"as {options.username!r}" if options.username else "anonymously"
    where = target.describe()
    tls, server_hostname = tls_context(scenario.broker)

    async def attempt() -> float:
        started = time.perf_counter()
        session = await open_session(
            scenario.broker.host,
            scenario.broker.port,
            options,
            tls=tls,
            server_hostname=server_hostname,
            timeout=scenario.connect_timeout,
        )
        elapsed = time.perf_counter() - started
        session.close()
        await wait_closed([session])
        return elapsed

    with asyncio.Runner(loop_factory=new_loop) as runner:
        try:
            elapsed = runner.run(attempt())
        except ConnectError as exc:
            hint = HINTS.get(exc.reason)
            look = f"; check {hint}" if hint else ""
            raise CheckError(f"{where}: cannot connect {who}: {exc.detail} [{exc.reason}]{look}") from None
    return f"ok: {where} accepted {info.device_id} {who} in {elapsed * 1000:.1f} ms"
