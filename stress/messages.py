"""What a device receives and says besides telemetry: commands, and its presence.

A :class:`Command` is what a target read in a message to a device (settings for its behaviour,
and where the answer goes); :class:`Presence` is how a device announces itself and says goodbye.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from stress.mqtt.codec import TopicCode, Will


@dataclass(frozen=True)
class Command:
    """What a message to a device asks: settings ``(attribute, value as text)`` for its behaviour,
    and where its answer goes (None: no answer), with what the target needs to write it."""

    settings: tuple[tuple[str, str], ...]
    reply_topic: str | None = None
    request: Mapping[str, object] | None = None


@dataclass(frozen=True)
class Presence:
    """How a device says it is there and that it leaves: a retained status on ``topic``,
    ``online`` once connected and ``offline`` before a clean DISCONNECT, each ``{"value": state,
    "ts": ms}``; the broker publishes the connection's Last Will, ``lost``, if it ends otherwise."""

    topic: TopicCode

    def will(self) -> Will:
        """The Last Will for the CONNECT (retained, QoS 1; its time is when the broker sends it)."""
        return Will(self.topic.topic, b'{"value":"lost"}', qos=1, retain=True)

    def say(self, state: str, epoch_ms: float) -> bytes:
        """The retained PUBLISH (QoS 0) of ``state`` now."""
        return self.topic.publish(b'{"value":"%s","ts":%d}' % (state.encode(), epoch_ms), retain=True)
