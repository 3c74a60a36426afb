"""The end-to-end subscriber: times messages of a sample of devices from send to delivery.

It subscribes, on the same broker, to every topic of the sampled devices and reads the send
time each payload carries (``{ts}``); delivery latency is its arrival time minus that. Both
clocks are this machine's, so no synchronisation is involved. What the sampled devices sent
and what arrived are both counted: a shortfall is loss (QoS 0) or a delivery still queued.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from stress.fleet.links import Dialer
from stress.measure.meter import Meter
from stress.mqtt import codec
from stress.mqtt.codec import ConnectOptions
from stress.mqtt.session import ConnectError, Session

#: Topic filters per SUBSCRIBE packet.
FILTERS_PER_PACKET = 100


class Observer:
    """One subscriber connection of the engine's process."""

    def __init__(
        self,
        dialer: Dialer,
        meter: Meter,
        options: ConnectOptions,
        topics: list[str],
        *,
        qos: int,
        sent_at: Callable[[bytes], float | None],
    ) -> None:
        self.dialer = dialer
        self.meter = meter
        self.options = options
        self.topics = topics
        self.qos = qos
        #: The send time (epoch ms) a payload carries, or None (the target reads it).
        self.sent_at = sent_at
        self.session: Session | None = None
        self.delivered = 0
        self.unreadable = 0

    async def start(self) -> None:
        """Connect and subscribe. A refusal never stops the fleet: it is counted (stage
        ``observer``) and told by one ``observer-refused`` event (reason, detail, the account),
        from which the run reports that end-to-end latency was not measured, and why."""
        dialer = self.dialer
        try:
            self.session = await dialer.open(self.options, self)
            for start in range(0, len(self.topics), FILTERS_PER_PACKET):
                chunk = [(topic, self.qos) for topic in self.topics[start : start + FILTERS_PER_PACKET]]
                granted = await self.session.subscribe(chunk, timeout=dialer.timeout)
                refused = [
                    (topic, code) for (topic, _), code in zip(chunk, granted, strict=False) if code >= 0x80
                ]
                if refused:
                    topic, code = refused[0]
                    raise ConnectError(
                        "suback-refused",
                        f"the broker refused the subscription to {topic} (SUBACK {code:#04x})",
                    )
        except ConnectError as exc:
            now = asyncio.get_running_loop().time()
            self.meter.error("observer", exc.reason, now)
            self.meter.emit(
                {
                    "event": "observer-refused",
                    "reason": exc.reason,
                    "detail": exc.detail[:300],
                    "account": self.options.username or "",
                },
                now,
            )
            if self.session is not None:
                self.session.close()
            self.session = None

    def keepalive(self, now: float) -> None:
        """Ping when idle (called once a second)."""
        if self.session is not None:
            self.session.keepalive_due(now)

    def close(self) -> None:
        """Disconnect."""
        if self.session is not None:
            self.session.close()
            self.session = None

    # ------------------------------------------------------------------ SessionHandler

    def on_message(self, message: codec.Publish) -> None:
        """Time one delivery from the send time in its payload."""
        if message.qos and self.session is not None:
            self.session.ack(message.packet_id, message.qos)
        sent = self.sent_at(message.payload)
        if sent is None:
            self.unreadable += 1
            return
        current = self.meter.current
        current.delivered += 1
        current.e2e.record(max(0.0, time.time() - sent / 1000))
        self.delivered += 1

    def on_puback(self, packet_id: int, reason: int) -> None:
        """The observer publishes nothing."""

    def on_pubcomp(self, packet_id: int, reason: int, packet: str) -> None:
        """The observer publishes nothing."""

    def on_lost(self, reason: str, detail: str) -> None:
        """Counted; end-to-end timing stops for this process (the run goes on)."""
        now = asyncio.get_running_loop().time()
        self.meter.error("observer", reason, now, device="observer", detail=detail)
        self.session = None

    def on_writable(self) -> None:
        """Nothing is queued here."""
