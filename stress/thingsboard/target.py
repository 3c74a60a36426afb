"""ThingsBoard's device APIs: MQTT, MQTT through gateways, and HTTP.

Every device logs in with its access token (from the tokens file ``stress provision --target
thingsboard`` writes). Telemetry is ``{"ts": <epoch ms>, "values": {...}}``, all attributes of
a sample in one message:

* ``mqtt``: each device its own connection, the token as user name and no password,
  publishing to ``v1/devices/me/telemetry``. Server-side RPC arrives on
  ``v1/devices/me/rpc/request/<id>`` and is answered on ``v1/devices/me/rpc/response/<id>``.
* ``gateway``: ``--gateways`` connections, each logged in with a gateway device's token,
  carrying many devices: ``v1/gateway/connect`` announces a device, ``v1/gateway/telemetry``
  carries ``{"<device>": [{"ts": ..., "values": {...}}]}``, RPC comes and goes on
  ``v1/gateway/rpc``. Device ``i`` of the fleet goes through gateway ``i % gateways + 1``.
* ``http``: ``POST /api/v1/<token>/telemetry`` to ``TB_URL``, each answered request the
  equivalent of an acknowledgement (``--qos 1``), ``--inflight`` requests at a time per device.

RPC methods the devices obey: ``set<Attribute>`` with the value as params (``setSetpoint``,
21.5), and ``set`` with an object of attribute: value. The answer says, per attribute, whether
the behaviour obeyed. ThingsBoard keeps one session per token: a device whose connections
keep being ended right after they start gives up with the reason ``session-taken-over``.
There is no end-to-end timing (ThingsBoard does not let a client subscribe to the telemetry
of other devices over MQTT): publish-to-ack is what is measured.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stress.behaviours import Behaviour, DeviceInfo
from stress.errors import ScenarioError
from stress.fleet.device import Device, Fleet
from stress.fleet.links import Dial
from stress.messages import Command
from stress.mqtt.codec import VERSIONS, ConnectOptions, TopicCode
from stress.payloads import Encoder, SampleEncoder
from stress.scenario import Scenario, device_name
from stress.targets.base import Target
from stress.thingsboard import TbError, check_url, gateway_name
from stress.thingsboard.gateway import Gateway, GatewayLink, most_members
from stress.thingsboard.http import HttpLink, HttpPool
from stress.thingsboard.mqtt_api import GATEWAY_TELEMETRY, RPC_REQUEST, RPC_RESPONSE, TELEMETRY, rpc_command

TRANSPORTS = ("mqtt", "gateway", "http")
#: What generic MQTT failures mean on ThingsBoard. It refuses an unknown access token. A
#: device over its rate limit has its connection closed: over MQTT 5 after DISCONNECT 0x83
#: (the code it sends for any publish it fails to process, and for well-formed telemetry
#: that is the rate limit), behind a gateway after PUBACK 0x97, at connect time with
#: "connection rate exceeded". Over MQTT 3.1.1 it closes without saying why.
RENAMED = {
    "connack-bad-credentials": "connack-unknown-token",
    "connack-not-authorized": "connack-unknown-token",
    "connack-connection-rate-exceeded": "rate-limited",
    "puback-quota-exceeded": "rate-limited",
    "server-disconnect-implementation-specific-error": "rate-limited",
    "server-disconnect-message-rate-too-high": "rate-limited",
    "connection-lost": "closed-by-thingsboard",
}


def read_tokens(path: Path) -> dict[str, str]:
    """``name -> access token`` from a tokens file (JSON), for a run."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(
            f"no tokens file at {path}: provision the fleet first "
            "(stress provision --target thingsboard --devices N --prefix P), or pass --tokens"
        ) from None
    except OSError as exc:
        raise ScenarioError(f"cannot read --tokens {path}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"--tokens {path} is not a tokens file (JSON name: token): {exc}") from None
    if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
        raise ScenarioError(f"--tokens {path} is not a tokens file: it must be a JSON object of name: token")
    return found


class ThingsBoardTarget(Target):
    """A ThingsBoard server (Community Edition or cloud)."""

    name = "thingsboard"

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(scenario)
        options = scenario.options
        for flag in ("topic", "payload", "command_topic", "username", "password", "credentials", "root"):
            if options.get(flag):
                raise ScenarioError(
                    f"--{flag.replace('_', '-')} is not for --target thingsboard: devices log in with "
                    "their access tokens (--tokens) and ThingsBoard's topics are fixed"
                )
        self.version = VERSIONS[scenario.broker.protocol]
        self.transport = options.get("transport") or "mqtt"
        if self.transport == "websocket" or scenario.broker.transport == "websocket":
            raise ScenarioError(
                "--transport websocket is for --target lab and mqtt: ThingsBoard's devices connect "
                "with --transport mqtt, gateway or http"
            )
        if self.transport not in TRANSPORTS:
            raise ScenarioError(f"--transport {self.transport!r}: choose one of {', '.join(TRANSPORTS)}")
        if scenario.qos == 2:
            raise ScenarioError(
                "--qos 2 is not for --target thingsboard: its device API takes QoS 0 and 1 only"
            )
        self.tokens_path = Path(options.get("tokens") or "data/provisioning/tokens.json")
        self.tokens = read_tokens(self.tokens_path)
        self.gateway_count = int(options.get("gateways") or 0)
        self.url = options.get("url", "")
        if self.transport == "gateway" and self.gateway_count < 1:
            raise ScenarioError(
                "--transport gateway needs --gateways N (gateway devices from stress provision)"
            )
        if self.transport != "gateway" and self.gateway_count:
            raise ScenarioError("--gateways is for --transport gateway")
        if self.transport == "gateway" and scenario.qos:
            largest = max(stage.devices for stage in scenario.stages)
            per_gateway = -(-largest // self.gateway_count)
            most = most_members(scenario.inflight)
            if per_gateway > most:
                raise ScenarioError(
                    f"{per_gateway:,} devices per gateway at QoS 1: one connection keeps at most "
                    f"{most:,} devices' --inflight {scenario.inflight} messages in flight; "
                    f"use --gateways {-(-largest // most)} or more, or a lower --inflight"
                )
        if self.transport == "http":
            if scenario.qos == 0:
                raise ScenarioError(
                    "--transport http: every request is answered, as at QoS 1: pass --qos 1 "
                    "(--inflight bounds the requests in flight per device)"
                )
            try:
                self.url = check_url(self.url)
            except TbError as exc:
                raise ScenarioError(str(exc)) from None
        self._check_tokens()
        self._encoder: Encoder | None = None
        self.gateways: dict[int, Gateway] = {}
        self.http: HttpPool | None = None

    # ------------------------------------------------------------------ who logs in

    def _check_tokens(self) -> None:
        """Every device of the timeline (or every gateway) has a token: one line now, not a
        failure inside the run."""
        scenario = self.scenario
        if self.transport == "gateway":
            names = [gateway_name(scenario.prefix, number) for number in range(1, self.gateway_count + 1)]
        else:
            largest = max(stage.devices for stage in scenario.stages)
            names = [device_name(scenario.prefix, index, scenario.devices) for index in range(largest)]
        for name in names:
            self.token(name)

    def token(self, name: str) -> str:
        """The access token of device (or gateway) ``name``."""
        token = self.tokens.get(name)
        if token is None:
            scenario = self.scenario
            raise ScenarioError(
                f"{name} has no access token in {self.tokens_path}: provision the fleet with stress "
                f"provision --target thingsboard --devices {scenario.devices} --prefix {scenario.prefix}"
                + (f" --gateways {self.gateway_count}" if self.gateway_count else "")
            )
        return token

    def connect_options(self, device: DeviceInfo) -> ConnectOptions:
        if self.transport == "gateway":  # its connection is its gateway's
            return self.options_for(gateway_name(self.scenario.prefix, device.index % self.gateway_count + 1))
        return self.options_for(device.device_id)

    def options_for(self, name: str) -> ConnectOptions:
        """How the device or gateway ``name`` logs in: its token as user name, no password."""
        return ConnectOptions(
            client_id=name,
            username=self.token(name),
            password=None,
            keepalive=self.scenario.broker.keepalive,
            version=self.version,
            receive_maximum=None,
        )

    def reason(self, name: str) -> str:
        return RENAMED.get(name, name)

    def takeover_hint(self) -> str:
        return (
            "ThingsBoard keeps one session per access token, so another client (or a second run) "
            "probably uses this device's token; a device over its rate limit is also cut off"
        )

    # ------------------------------------------------------------------ what is sent

    def topics(self, device: DeviceInfo, attributes: Sequence[str]) -> list[TopicCode]:
        topic = GATEWAY_TELEMETRY if self.transport == "gateway" else TELEMETRY
        return [TopicCode(topic, self.version)]

    def encoder(self, device: DeviceInfo, attributes: Sequence[str]) -> Encoder:
        if self.transport == "gateway":
            name = json.dumps(device.device_id).replace("%", "%%")  # its name, as a JSON key
            form = "{" + name + ':[{"ts":%b,"values":%b}]}'
            return SampleEncoder(form, ["ts", "values"], attributes, whole_ms=True).encode
        if self._encoder is None:
            self._encoder = SampleEncoder(
                '{"ts":%b,"values":%b}', ["ts", "values"], attributes, whole_ms=True
            ).encode
        return self._encoder

    # ------------------------------------------------------------------ commands (server-side RPC)

    def command_filters(self, device: DeviceInfo) -> list[str]:
        return [RPC_REQUEST + "+"] if self.transport == "mqtt" else []

    def command(self, device: DeviceInfo, topic: str, payload: bytes) -> Command | None:
        if not topic.startswith(RPC_REQUEST):
            return None
        request_id = topic[len(RPC_REQUEST) :]
        try:
            request = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            request = None
        return rpc_command(request_id, request, RPC_RESPONSE + request_id)

    def reply(self, command: Command, obeyed: Sequence[bool]) -> bytes:
        request = command.request or {}
        if request.get("error"):
            data: dict[str, Any] = {"ok": False, "error": request["error"]}
        else:
            data = {
                "ok": bool(obeyed) and all(obeyed),
                "obeyed": {attr: done for (attr, _), done in zip(command.settings, obeyed, strict=True)},
            }
        if request.get("device"):
            data = {"device": request["device"], "id": _id_value(str(request["id"])), "data": data}
        return json.dumps(data).encode()

    # ------------------------------------------------------------------ transports

    def make_device(
        self, fleet: Fleet, dial: Dial, info: DeviceInfo, behaviour: Behaviour, *, sampled: bool
    ) -> Device:
        if self.transport == "mqtt":
            return super().make_device(fleet, dial, info, behaviour, sampled=sampled)
        link: GatewayLink | HttpLink
        if self.transport == "http":
            if self.http is None:
                self.http = HttpPool(self.url, self.scenario.connect_timeout)
            link = HttpLink(self.http, f"{self.url}/api/v1/{self.token(info.device_id)}/telemetry")
        else:
            number = info.index % self.gateway_count + 1
            gateway = self.gateways.get(number)
            if gateway is None:
                name = gateway_name(self.scenario.prefix, number)
                gateway = self.gateways[number] = Gateway(fleet, dial, name, self.options_for(name))
            link = GatewayLink(gateway)
        device = self.device_on(link, fleet, info, behaviour, sampled=sampled)
        if isinstance(link, GatewayLink):
            link.gateway.join(device, info.index // self.gateway_count)
        return device

    async def close(self) -> None:
        for gateway in self.gateways.values():
            await gateway.close()
        if self.http is not None:
            await self.http.close()

    def no_e2e_reason(self) -> str:
        return "ThingsBoard offers no MQTT subscription to devices' telemetry (publish-to-ack is measured)"

    def describe(self) -> str:
        if self.transport == "http":
            return f"thingsboard at {self.url} (HTTP device API)"
        broker = self.scenario.broker
        scheme = "mqtts" if broker.tls else "mqtt"
        how = f", through {self.gateway_count} gateways" if self.transport == "gateway" else ""
        return f"thingsboard at {scheme}://{broker.host}:{broker.port} (MQTT {broker.protocol}{how})"


def _id_value(text: str) -> int | str:
    """A gateway RPC id as it came (ThingsBoard's are numbers)."""
    return int(text) if text.isdigit() else text
