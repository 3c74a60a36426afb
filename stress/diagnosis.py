"""What a refused or unanswered connection means, in one line that says what to do.

``stress check``, a run that no device could join (:mod:`stress.startup`) and a refused
end-to-end observer say it in these words, so the three never disagree: what was refused,
which setting holds the credential (``--username``, the lab's ``.env``, ``--credentials``,
the tokens file), and whether anything listens at the broker's address at all.
"""

from __future__ import annotations

from stress.behaviours import DeviceInfo
from stress.errors import ScenarioError
from stress.mqtt.reasons import AUTH_REASONS
from stress.scenario import Scenario, device_name
from stress.targets.base import Target

#: Reasons that say the account, not the network, is the problem (ThingsBoard: the token).
CREDENTIAL_REASONS = AUTH_REASONS | {"connack-unknown-token"}

#: What to look at for the other reasons.
HINTS = {
    "connack-client-id-rejected": "the client id (--prefix)",
    "connack-bad-protocol-version": "--protocol",
    "dns": "--host",
    "timeout": "--host, --port and any firewall (a busy broker: a longer --connect-timeout)",
    "tls-verify": "--ca-file (or --insecure for a self-signed lab)",
    "tls-handshake": "--tls and --port (is it the TLS listener?)",
    "tls-certificate-required": "--cert and --key: the broker asks for a client certificate",
    "tls-certificate-refused": (
        "--cert: the broker does not trust it (signed by another authority, expired or revoked?)"
    ),
    "websocket-refused": "--port and --ws-path (the broker's WebSocket listener, and its path?)",
    "websocket-handshake": "--port and --tls (is it a WebSocket listener? a proxy in the way?)",
    "websocket-protocol": "--port (is it an MQTT broker's WebSocket listener?)",
}


def credential_setting(scenario: Scenario, *, observer: bool = False) -> str:
    """Where the account a connection logged in with is set.

    ``observer``: the end-to-end subscriber's account, which on the lab is the fleet account
    even when the devices have accounts of their own.
    """
    options = scenario.options
    if scenario.target == "thingsboard":
        tokens = options.get("tokens", "")
        return f"the access token in --tokens {tokens} (is the device still there? provision it again)"
    if scenario.target == "lab":
        if options.get("credentials") and not observer:
            return (
                f"the device accounts in --credentials {options['credentials']} "
                "(made by stress provision --target lab)"
            )
        where = options.get("env_file") or "the lab's .env (--env-file)"
        return f"LAB_FLEET_USER and LAB_FLEET_PASSWORD in {where}"
    return "--username and --password"


def advice(scenario: Scenario, reason: str, *, observer: bool = False) -> str:
    """What to do about a connection that failed for ``reason`` ("" when there is nothing to add)."""
    if reason in CREDENTIAL_REASONS:
        if scenario.target == "mqtt" and not scenario.options.get("username"):
            return "the broker wants an account: pass --username and --password"
        rights = ", and the account's rights" if reason == "connack-not-authorized" else ""
        return f"check {credential_setting(scenario, observer=observer)}{rights}"
    if reason == "tcp-refused":
        broker = scenario.broker
        nobody = f"nothing listens on {broker.host}:{broker.port}: is the broker running?"
        return (
            f"{nobody} (./lab status)"
            if scenario.target == "lab"
            else f"{nobody} (else check --host and --port)"
        )
    hint = HINTS.get(reason)
    return f"check {hint}" if hint else ""


def account(username: str | None) -> str:
    """How a connection logged in: ``as 'fleet'``, or ``anonymously``."""
    return f"as {username!r}" if username else "anonymously"


def first_device(scenario: Scenario) -> DeviceInfo:
    """The fleet's first device, as ``stress check`` connects it."""
    return DeviceInfo(0, device_name(scenario.prefix, 0, scenario.devices), "room-01")


def cannot_connect(scenario: Scenario, reason: str, detail: str, target: Target) -> str:
    """The fleet's first device cannot connect, for ``reason`` (as the target names it)."""
    try:
        who = account(target.connect_options(first_device(scenario)).username)
    except ScenarioError:  # a device without an account of its own: it never tried
        who = "as the first device"
    line = f"{target.describe()}: cannot connect {who}: {f'{detail} ' if detail else ''}[{reason}]"
    look = advice(scenario, reason)
    return f"{line}; {look}" if look else line


def observer_refused(scenario: Scenario, reason: str, detail: str, username: str | None) -> str:
    """The end-to-end observer (logged in as ``username``) was refused: what, and what to do."""
    who = account(username)
    if reason == "suback-refused":
        what = f"{detail} {who}"
        look = (
            "use an account that may subscribe to the sampled devices' topics "
            f"({credential_setting(scenario, observer=True)})"
        )
    else:
        what = f"cannot connect {who}: {detail}"
        look = advice(scenario, reason, observer=True)
    instead = f"{look}, or pass" if look else "pass"
    return (
        f"end-to-end observer refused: {what} [{reason}]; end-to-end latency is not measured: "
        f"{instead} --e2e-devices 0 to run without it"
    )
