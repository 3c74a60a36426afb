"""The interface every target implements.

A target says how a simulated device talks to one kind of server: which topics and payloads
it publishes, how it logs in, where its commands arrive, and how the end-to-end subscriber
finds the send time in a payload it receives. The engine knows nothing else about targets.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence

from stress.behaviours import Behaviour, DeviceInfo
from stress.fleet.device import Device, Fleet, Link
from stress.fleet.links import Dial, MqttLink
from stress.messages import Command, Presence
from stress.mqtt.codec import ConnectOptions, TopicCode
from stress.payloads import Encoder
from stress.scenario import Scenario


class Target(ABC):
    """How a fleet talks to one kind of server."""

    name: str = ""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario

    @abstractmethod
    def topics(self, device: DeviceInfo, attributes: Sequence[str]) -> list[TopicCode]:
        """The topics of one sample, in the order ``encoder`` returns payloads."""

    @abstractmethod
    def encoder(self, device: DeviceInfo, attributes: Sequence[str]) -> Encoder:
        """``encode(values, seq, epoch_ms) -> payloads``, one per topic."""

    @abstractmethod
    def connect_options(self, device: DeviceInfo) -> ConnectOptions:
        """How ``device`` logs in."""

    def presence(self, device: DeviceInfo) -> Presence | None:
        """How ``device`` announces itself and says goodbye (none by default)."""
        return None

    def command_filters(self, device: DeviceInfo) -> list[str]:
        """Topic filters where commands for ``device`` arrive (none by default)."""
        return []

    def command_attr(self, device: DeviceInfo, topic: str) -> str | None:
        """The attribute a command on ``topic`` sets, or None if it is not a command."""
        return None

    def command(self, device: DeviceInfo, topic: str, payload: bytes) -> Command | None:
        """What a message on ``topic`` asks of ``device`` (default: the payload sets ``command_attr``)."""
        attr = self.command_attr(device, topic)
        if attr is None:
            return None
        return Command(((attr, payload.decode("utf-8", "replace")),))

    def reply(self, command: Command, obeyed: Sequence[bool]) -> bytes:
        """The answer to a command that has a ``reply_topic``."""
        return b'{"ok":' + (b"true" if obeyed and all(obeyed) else b"false") + b"}"

    def reason(self, name: str) -> str:
        """A failure reason as this target means it (a rate limit, an unknown token)."""
        return name

    def takeover_hint(self) -> str:
        """What it most likely means when the server keeps ending a device's new connections."""
        return "another client probably uses the same client id (a second run with the same --prefix?)"

    def make_device(
        self, fleet: Fleet, dial: Dial, info: DeviceInfo, behaviour: Behaviour, *, sampled: bool
    ) -> Device:
        """The simulated device of ``info``, with its link (by default an MQTT connection of its
        own, opened with ``dial``)."""
        presence = self.presence(info)
        options = self.connect_options(info)
        link = MqttLink(
            dial,
            options if presence is None else dataclasses.replace(options, will=presence.will()),
            timeout=self.scenario.connect_timeout,
            presence=presence,
            filters=self.command_filters(info),
        )
        return self.device_on(link, fleet, info, behaviour, sampled=sampled)

    def device_on(
        self, link: Link, fleet: Fleet, info: DeviceInfo, behaviour: Behaviour, *, sampled: bool
    ) -> Device:
        """The device of ``info`` on ``link``: the target's topics and encoder, the target its dialect."""
        attributes = type(behaviour).attributes
        return Device(
            fleet,
            info,
            behaviour,
            link=link,
            dialect=self,
            topics=self.topics(info, attributes),
            encode=self.encoder(info, attributes),
            sampled=sampled,
        )

    async def close(self) -> None:
        """Release what the target holds for the run (shared connections), after the fleet stopped."""
        return

    def observer_options(self) -> ConnectOptions | None:
        """How the end-to-end subscriber logs in (None: end-to-end timing impossible)."""
        return None

    def no_e2e_reason(self) -> str:
        """Why ``observer_options`` is None."""
        return "the payload has no {ts}"

    def sent_at(self, payload: bytes) -> float | None:
        """The send time (epoch ms) written in a payload, or None."""
        return None

    def describe(self) -> str:
        """One line saying where the fleet goes."""
        broker = self.scenario.broker
        return f"{self.name} at {broker.url} (MQTT {broker.protocol})"
