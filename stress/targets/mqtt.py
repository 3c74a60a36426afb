"""Any MQTT broker: topics and payloads from templates, one account for the whole fleet.

Templates take ``{placeholders}``:

* topic: ``{root}``, ``{room}``, ``{device}``, ``{attr}``. With ``{attr}`` each attribute
  is its own message; without it, one message carries them all as ``{values}``.
* payload: ``{value}`` (per attribute) or ``{values}`` (per sample), ``{seq}`` (the device's
  message number), ``{ts}`` (send time, epoch milliseconds). Values are written as JSON
  (numbers plain, strings quoted). The end-to-end subscriber needs ``{ts}``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence

from stress.behaviours import DeviceInfo
from stress.errors import ScenarioError
from stress.mqtt.codec import MQTT5, VERSIONS, ConnectOptions, TopicCode
from stress.payloads import DYNAMIC_FIELDS, STATIC_FIELDS, AttributeEncoder, Encoder, SampleEncoder, Template
from stress.scenario import Scenario, valid_level
from stress.targets.base import Target

DEFAULT_TOPIC = "{root}/{room}/{device}/{attr}"
DEFAULT_PAYLOAD = '{{"value":{value},"ts":{ts}}}'
DEFAULT_ROOT = "stress"


class MqttTarget(Target):
    """A plain MQTT broker."""

    name = "mqtt"

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(scenario)
        options = scenario.options
        self.version = VERSIONS[scenario.broker.protocol]
        self.root = options.get("root", DEFAULT_ROOT)
        if not valid_level(self.root):
            raise ScenarioError(f"--root {self.root!r} must be one topic level: no '/', '+', '#'")
        self.topic_template = Template.parse(options.get("topic", DEFAULT_TOPIC), STATIC_FIELDS, "--topic")
        if not self.topic_template.text or any(char in self.topic_template.text for char in "+#\0"):
            raise ScenarioError(
                f"--topic {self.topic_template.text!r}: a topic to publish to is not empty "
                "and has no '+' or '#'"
            )
        per_attribute = "attr" in self.topic_template.fields
        allowed = (
            ("value", "seq", "ts", *STATIC_FIELDS)
            if per_attribute
            else ("values", "seq", "ts", "root", "room", "device")
        )
        self.payload_template = Template.parse(options.get("payload", DEFAULT_PAYLOAD), allowed, "--payload")
        self.per_attribute = per_attribute
        self.username = options.get("username") or None
        self.password = options.get("password") or None
        if self.password and not self.username and self.version != MQTT5:
            raise ScenarioError("a password needs a user name with MQTT 3.1.1 (--username, or --protocol 5)")
        command = options.get("command_topic", "")
        self.command_template = Template.parse(command, STATIC_FIELDS, "--command-topic") if command else None
        if self.command_template and "attr" not in self.command_template.fields:
            raise ScenarioError("--command-topic must contain {attr}: the attribute a command sets")
        self._ts_pattern = self.payload_template.pattern() if "ts" in self.payload_template.fields else None
        self._encoders: dict[tuple[tuple[str, ...], tuple[str, ...]], Encoder] = {}
        #: Whether every device's payloads share one form (the template names no room or device).
        self._payload_same = not {"room", "device", "root"} & set(self.payload_template.fields)

    def _static(self, device: DeviceInfo, attr: str = "") -> dict[str, str]:
        return {"root": self.root, "room": device.room, "device": device.device_id, "attr": attr}

    def topics(self, device: DeviceInfo, attributes: Sequence[str]) -> list[TopicCode]:
        names = attributes if self.per_attribute else [""]
        out = []
        for attr in names:
            out.append(
                TopicCode(
                    self.topic_template.fill(self._static(device, attr)).replace("%%", "%"), self.version
                )
            )
        return out

    def encoder(self, device: DeviceInfo, attributes: Sequence[str]) -> Encoder:
        if self._payload_same:  # no per-device placeholder: one encoder per attribute list
            encoder = self._encoders.get(((), tuple(attributes)))
            if encoder is not None:
                return encoder
        fields = [name for name in self.payload_template.fields if name in DYNAMIC_FIELDS]
        if self.per_attribute:
            formats = tuple(self.payload_template.fill(self._static(device, attr)) for attr in attributes)
        else:
            formats = (self.payload_template.fill(self._static(device)),)
        # Devices whose payloads differ only in their values share an encoder: it holds no state,
        # and one object the whole fleet touches stays in the CPU's cache
        key = ((), tuple(attributes)) if self._payload_same else (formats, tuple(attributes))
        encoder = self._encoders.get(key)
        if encoder is None:
            if self.per_attribute:
                encoder = AttributeEncoder(formats, fields).encode
            else:
                encoder = SampleEncoder(formats[0], fields, attributes).encode
            self._encoders[key] = encoder
        return encoder

    def client_id(self, device: DeviceInfo) -> str:
        """The MQTT client id of a device: its id (a second run with the same ids takes over)."""
        return device.device_id

    def connect_options(self, device: DeviceInfo) -> ConnectOptions:
        return ConnectOptions(
            client_id=self.client_id(device),
            username=self.username,
            password=self.password,
            keepalive=self.scenario.broker.keepalive,
            version=self.version,
            receive_maximum=None,
        )

    def command_filters(self, device: DeviceInfo) -> list[str]:
        if self.command_template is None:
            return []
        return [self.command_template.fill(self._static(device, "+")).replace("%%", "%")]

    def command_attr(self, device: DeviceInfo, topic: str) -> str | None:
        for topic_filter in self.command_filters(device):
            levels, wanted = topic.split("/"), topic_filter.split("/")
            if len(levels) != len(wanted):
                continue
            attr = [level for level, want in zip(levels, wanted, strict=True) if want == "+"]
            if len(attr) == 1 and all(w in ("+", level) for level, w in zip(levels, wanted, strict=True)):
                return attr[0]
        return None

    def observer_options(self) -> ConnectOptions | None:
        if self._ts_pattern is None:
            return None
        return ConnectOptions(
            client_id=f"stress-observer-{os.getpid()}-{secrets.token_hex(3)}",
            username=self.username,
            password=self.password,
            keepalive=self.scenario.broker.keepalive,
            version=self.version,
        )

    def sent_at(self, payload: bytes) -> float | None:
        if self._ts_pattern is None:
            return None
        match = self._ts_pattern.fullmatch(payload)
        if match is None:
            return None
        try:
            return float(match.group("ts"))
        except ValueError:
            return None
