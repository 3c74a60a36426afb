"""``stress check``: is the target reachable, and does it take the credentials? One line says.

It connects once, as the run with the same flags would connect its first device (the lab's
fleet account, that device's own account from ``--credentials``, or ``--username``), waits for
the CONNACK and disconnects. It publishes nothing, so it leaves nothing in the lab's history.
"""

from __future__ import annotations

import asyncio
import time

from stress.diagnosis import account, cannot_connect, first_device
from stress.engine import new_loop
from stress.errors import ScenarioError, StressError
from stress.fleet.links import Dialer
from stress.mqtt.session import ConnectError, wait_closed
from stress.scenario import Scenario
from stress.targets.registry import build


class CheckError(StressError):
    """The target cannot be used as the run would use it; the message is one line."""


def check(scenario: Scenario) -> str:
    """One line saying that the target took the first device's connection; else ``CheckError``."""
    if scenario.target == "thingsboard":
        return check_thingsboard(scenario)
    return check_connect(scenario)


def check_thingsboard(scenario: Scenario) -> str:
    """ThingsBoard: sign in to the REST API and list a page of devices; then, when the tokens
    file has the first device, connect as it does (MQTT transports)."""
    from stress.thingsboard import TbError  # noqa: PLC0415 - only this target needs it
    from stress.thingsboard.rest import TbClient  # noqa: PLC0415

    options = scenario.options
    try:
        client = TbClient(
            options.get("url", ""),
            options.get("tb_username", ""),
            options.get("tb_password", ""),
            timeout=scenario.connect_timeout,
            retries=1,
        )
        started = time.perf_counter()
        client.login()
        page = client.call("GET", "/api/tenant/devices", params={"pageSize": 10, "page": 0})
        elapsed = time.perf_counter() - started
    except TbError as exc:
        raise CheckError(str(exc)) from None
    total = page.get("totalElements", "?") if isinstance(page, dict) else "?"
    line = (
        f"ok: ThingsBoard at {client.url} signed in {client.username!r} and listed a page of its "
        f"{total} devices in {elapsed * 1000:.0f} ms"
    )
    if options.get("transport") == "http":
        return line
    try:
        mqtt = check_connect(scenario)
    except ScenarioError as exc:  # no tokens yet: the REST side is what can be checked
        return f"{line}; MQTT not checked: {exc}"
    return f"{line}; {mqtt.removeprefix('ok: ')}"


def check_connect(scenario: Scenario) -> str:
    """Connect as the first device of the run would, and disconnect."""
    target = build(scenario)
    info = first_device(scenario)
    options = target.connect_options(info)
    who = account(options.username)

    async def attempt() -> float:
        dialer = Dialer(scenario.broker, scenario.connect_timeout)  # TCP or WebSocket, TLS
        started = time.perf_counter()
        session = await dialer.open(options, None)
        elapsed = time.perf_counter() - started
        session.close()
        await wait_closed([session])
        return elapsed

    with asyncio.Runner(loop_factory=new_loop) as runner:
        try:
            elapsed = runner.run(attempt())
        except ConnectError as exc:
            raise CheckError(
                cannot_connect(scenario, target.reason(exc.reason), exc.detail, target)
            ) from None
    return f"ok: {target.describe()} accepted {info.device_id} {who} in {elapsed * 1000:.1f} ms"
