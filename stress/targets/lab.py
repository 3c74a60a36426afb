"""This lab: ``<root>/<room>/<device>/<attr>``, one value per message, commands on ``.../set/<attr>``.

Devices log in either with one fleet account from the lab's ``.env`` (``LAB_FLEET_USER``,
``LAB_FLEET_PASSWORD``) or each with its own account, created by
``stress provision --target lab`` and listed in a credentials file (``device,password``).
Payloads are ``{"value": v, "ts": epoch_ms}``, which the portal stores with the device's
own timestamp, and from which the end-to-end subscriber (the fleet account) times delivery.
Each device says it is there and that it leaves the lab's way (:class:`Presence`): a retained
``online`` on ``<root>/<room>/<device>/$state`` once connected, ``offline`` before a clean
DISCONNECT, and a Last Will ``lost`` for any other end.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from stress.behaviours import DeviceInfo
from stress.errors import ScenarioError
from stress.messages import Presence
from stress.mqtt.codec import ConnectOptions, TopicCode
from stress.scenario import Scenario
from stress.targets.mqtt import DEFAULT_PAYLOAD, DEFAULT_TOPIC, MqttTarget


def read_credentials(path: Path) -> dict[str, str]:
    """``device -> password`` from a credentials file (CSV with a ``device,password`` header)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
    except OSError as exc:
        raise ScenarioError(f"cannot read --credentials {path}: {exc.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ScenarioError(f"--credentials {path} is not a device,password CSV file: {exc}") from None
    if reader.fieldnames is not None and not {"device", "password"} <= set(reader.fieldnames):
        raise ScenarioError(
            f"--credentials {path} is not a device,password CSV file: it needs the columns device,password"
        )
    return {row["device"]: row["password"] for row in rows if row.get("device")}


#: The lab's documented defaults (``.env.example``) of the settings ``stress`` reads, for a
#: ``.env`` that lacks one. They are here, not read from ``.env.example``, because an installed
#: ``stress`` has no checkout beside it; a test keeps the two in agreement.
#: The attribute level of a device's presence topic (``web/presence.py`` reads it; a test keeps them equal).
PRESENCE_ATTR = "$state"

LAB_DEFAULTS = {
    "TOPIC_ROOT": "office",
    "MQTT_PORT": "1883",
    "MQTT_WS_PORT": "9001",
    "MQTT_TLS_PORT": "8883",
    "PORTAL_PORT": "5000",
    "PORTAL_ADMIN_USER": "admin",
    "PORTAL_LIVE_FLUSH_MS": "100",
    "MQTT_ADMIN_USER": "admin",
    "LAB_FLEET_USER": "fleet",
}


def lab_env(env_file: Path) -> dict[str, str]:
    """The lab's settings from its ``.env``, with the documented defaults for what it lacks."""
    from labctl import envfile  # noqa: PLC0415 - only the lab's own commands need it

    if not env_file.is_file():
        raise ScenarioError(
            f"no lab settings at {env_file}: start the lab (./lab up) from its folder, or pass --env-file"
        )
    try:
        return {**LAB_DEFAULTS, **envfile.read(env_file)}
    except (envfile.EnvFileError, OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"cannot read the lab's settings: {exc}") from None


def lab_port(env: dict[str, str], flag: int | None, *, transport: str = "mqtt", tls: bool = False) -> int:
    """``--port`` when given, else the lab's listener for the transport: ``MQTT_PORT`` (MQTT over
    TCP), ``MQTT_TLS_PORT`` (with ``tls``) or ``MQTT_WS_PORT`` (MQTT over WebSocket)."""
    if flag is not None:
        return flag
    if transport == "websocket":
        if tls:
            raise ScenarioError(
                "the lab's WebSocket listener (MQTT_WS_PORT) has no TLS: drop --tls, "
                "or pass --port of a listener for MQTT over WebSocket with TLS"
            )
        variable = "MQTT_WS_PORT"
    else:
        variable = "MQTT_TLS_PORT" if tls else "MQTT_PORT"
    raw = env.get(variable, LAB_DEFAULTS[variable])
    if not raw.isdigit() or not 0 < int(raw) < 65_536:
        raise ScenarioError(f"{variable}={raw!r} in the lab's settings is not a port: fix it, or pass --port")
    return int(raw)


class LabTarget(MqttTarget):
    """The lab started by ``./lab up`` (or Compose)."""

    name = "lab"

    def __init__(self, scenario: Scenario) -> None:
        options = dict(scenario.options)
        for fixed in ("topic", "payload", "command_topic"):
            if options.get(fixed):
                raise ScenarioError(
                    f"--{fixed.replace('_', '-')} is for --target mqtt; the lab's topics are fixed"
                )
        options.update(
            topic=DEFAULT_TOPIC,
            payload=DEFAULT_PAYLOAD,
            command_topic="{root}/{room}/{device}/set/{attr}",
            root=options.get("root") or "office",
        )
        credentials = options.get("credentials")
        if not credentials and not (options.get("username") and options.get("password")):
            raise ScenarioError(
                "the lab target needs the fleet account (LAB_FLEET_USER and LAB_FLEET_PASSWORD in the "
                "lab's .env, see --env-file) or per-device accounts "
                "(--credentials FILE from stress provision)"
            )
        super().__init__(dataclasses.replace(scenario, options=options))
        self.passwords = read_credentials(Path(credentials)) if credentials else None

    def presence(self, device: DeviceInfo) -> Presence:
        """The lab's presence: a retained status on ``<root>/<room>/<device>/$state``."""
        return Presence(
            TopicCode(f"{self.root}/{device.room}/{device.device_id}/{PRESENCE_ATTR}", self.version)
        )

    def connect_options(self, device: DeviceInfo) -> ConnectOptions:
        if self.passwords is None:
            return super().connect_options(device)
        password = self.passwords.get(device.device_id)
        if password is None:
            raise ScenarioError(
                f"device {device.device_id} has no account in --credentials: provision the fleet with "
                f"stress provision --target lab --devices {self.scenario.devices} "
                f"--prefix {self.scenario.prefix}"
            )
        return ConnectOptions(
            client_id=device.device_id,
            username=device.device_id,
            password=password,
            keepalive=self.scenario.broker.keepalive,
            version=self.version,
        )
