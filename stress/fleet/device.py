"""One simulated device: its connection, its schedule, and what it publishes.

A device is driven by its fleet's clock, never by a task of its own: the fleet calls
``fire`` when the device's next message is due (or when it can send again after
back-pressure). Each message has an absolute due time; how late it went out is measured,
and a device that fell behind sends what is due at once, counting every late message.

Failures never stop the fleet: a device that cannot connect retries with jittered
exponential backoff while the others go on; while it is away, the messages it should have
sent count as failed (``not-connected``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Protocol

from stress.behaviours import Behaviour, DeviceInfo
from stress.measure.meter import Meter
from stress.messages import Command
from stress.mqtt import codec
from stress.mqtt.codec import TopicCode
from stress.mqtt.session import ConnectError, reason_for_ack
from stress.payloads import Encoder
from stress.scenario import Scenario

#: Most samples one ``fire`` sends when catching up, so one device never holds the loop long.
MAX_CATCH_UP = 64
#: Samples one ``fire`` writes in capacity mode at QoS 0 before giving the others a turn.
CAPACITY_CHUNK = 16
#: A connection the server ends within this many seconds of accepting it is "short".
SHORT_SESSION_S = 60.0
#: Short sessions in a row, ended by the server, after which a device stops reconnecting.
TAKEN_OVER_LIMIT = 5
#: How the server ends a connection another client took over (MQTT 3.1.1 says nothing more).
TAKEOVER_SIGNS = frozenset({"connection-lost", "connection-reset", "server-disconnect-session-taken-over"})

IDLE, CONNECTING, CONNECTED, WAITING, STOPPED = range(5)


class Fleet(Protocol):
    """What a device needs of the fleet that drives it (the engine is one)."""

    loop: asyncio.AbstractEventLoop
    meter: Meter
    #: The run's settings (in-flight window, backoff, slow-device delay).
    scenario: Scenario
    qos: int
    #: Seconds between a device's samples now (0: capacity mode, as fast as it can).
    interval: float

    def schedule(self, device: Device) -> None:
        """Fire ``device`` at its ``due`` time."""

    def ready(self, device: Device) -> None:
        """Fire ``device`` at the next tick (its connection takes more again)."""

    def connected(self, device: Device, now: float) -> None:
        """The device's connection is up: put it on the schedule."""

    def connect_failed(self, device: Device, now: float) -> None:
        """An attempt failed or the connection dropped: try again after a backoff."""

    def published(self, device: Device, messages: int, now: float) -> None:
        """``messages`` of ``device`` went to its connection."""


class Dialect(Protocol):
    """What the target's server means by the messages a device receives, and its failures."""

    def command(self, device: DeviceInfo, topic: str, payload: bytes) -> Command | None:
        """What a message on ``topic`` asks of ``device`` (None: not a command)."""

    def reply(self, command: Command, obeyed: Sequence[bool]) -> bytes:
        """The answer to a command that has a ``reply_topic``."""

    def reason(self, name: str) -> str:
        """A failure reason as this server means it."""

    def takeover_hint(self) -> str:
        """What it most likely means when the server keeps ending a device's new connections."""


class Connection(Protocol):
    """Where a connected device writes: an MQTT session, or a link's own stand-in."""

    connected: bool
    #: Whether the transport takes no more for now (back-pressure).
    paused: bool
    receive_maximum: int

    def write(self, data: bytes, now: float) -> None:
        """Write a sample's messages: its PUBLISH packets, or what its link's ``send`` returned."""

    def keepalive_due(self, now: float) -> str | None:
        """Ping when idle (called about once a second)."""


#: ``send(device, payloads, now, qos) -> bytes``: a link's own way of sending one sample (each
#: payload in flight from ``now`` at QoS 1); what it returns is written to the connection.
Send = Callable[["Device", list[bytes], float, int], bytes]


class Link(Protocol):
    """How a device's messages travel: its own MQTT connection, a gateway's, or HTTP requests."""

    #: The MQTT version of the connection (for replies and acks).
    version: int

    @property
    def send(self) -> Send | None:
        """How the link sends a sample's payloads itself, or None when the device writes them as
        MQTT PUBLISH packets on its topics to its connection (its own, or a gateway's)."""

    async def open(self, device: Device) -> Connection:
        """A connection for ``device`` (raises :class:`ConnectError`)."""

    async def opened(self, device: Device, connection: Connection) -> None:
        """The device is connected and on the schedule: say so, subscribe to its commands."""

    def leave(self, device: Device, connection: Connection) -> None:
        """End the device's part of ``connection`` cleanly (a goodbye, a DISCONNECT)."""

    def cut(self, device: Device, reason: str, now: float) -> None:
        """Cut the connection abruptly (a storm); every device on it is told it was dropped."""

    def stopped(self, device: Device) -> None:
        """The device left the fleet for good."""


class Device:
    """A device of the fleet (also the handler of its MQTT session, when it has one of its own)."""

    __slots__ = (
        "attempts",
        "behaviour",
        "blocked",
        "counted",
        "dialect",
        "due",
        "encode",
        "fleet",
        "held",
        "id_base",
        "id_span",
        "inflight",
        "info",
        "joined",
        "last_payload",
        "link",
        "offline",
        "offset",
        "packet_id",
        "per_sample",
        "queued",
        "sample",
        "sampled",
        "send",
        "seq",
        "session",
        "short_sessions",
        "since",
        "slot",
        "slow",
        "state",
        "topics",
        "window",
        "worst",
    )

    def __init__(
        self,
        fleet: Fleet,
        info: DeviceInfo,
        behaviour: Behaviour,
        *,
        link: Link,
        dialect: Dialect,
        topics: list[TopicCode],
        encode: Encoder,
        sampled: bool,
    ) -> None:
        self.fleet = fleet
        self.link = link
        #: (The link's ``send``, kept here: it is read at every sample.)
        self.send = link.send
        self.dialect = dialect
        self.info = info
        self.behaviour = behaviour
        self.topics = topics
        self.sample = codec.SampleCode(topics)
        self.encode = encode
        self.per_sample = len(topics)
        self.sampled = sampled
        self.session: Connection | None = None
        self.state = IDLE
        self.inflight: dict[int, float] = {}
        self.window = fleet.scenario.inflight
        #: Packet ids are ``id_base + 1 .. id_base + id_span`` (a share of a connection's ids when
        #: devices share one, as behind a gateway).
        self.packet_id = 0
        self.id_base = 0
        self.id_span = 65_535
        self.seq = 0
        #: The last payload written (the ``published`` event shows it).
        self.last_payload = b""
        self.attempts = 0
        self.due = math.inf
        #: Paused by ``stress pause``: connected, silent, off the schedule until resumed.
        self.held = False
        #: Deactivated (``--active`` list): disconnected, and not coming back until activated.
        self.offline = False
        #: When its connection came up, and how many in a row ended soon after (taken over?).
        self.since = 0.0
        self.short_sessions = 0
        #: A slow device acknowledges the commands it receives late (``--slow-devices``).
        self.slow = False
        #: Its slowest message this second (seconds: ack time at QoS 1 and 2, lateness at QoS 0).
        self.worst = 0.0
        self.offset = 0.0
        self.slot = -1
        self.joined = False
        self.blocked = False
        self.queued = False
        #: Whether the fleet counts it (its first connection attempt has finished).
        self.counted = False

    # ------------------------------------------------------------------ connection

    async def connect(self) -> None:
        """One connection attempt (run by the fleet's connector, which bounds how many at once)."""
        fleet = self.fleet
        if self.offline:  # deactivated while it waited for its turn
            self.state = WAITING
            return
        loop = fleet.loop
        started = loop.time()
        self.state = CONNECTING
        try:
            session = await self.link.open(self)
        except ConnectError as exc:
            now = loop.time()
            reason = self.dialect.reason(exc.reason)
            fleet.meter.error("connect", reason, now, device=self.info.device_id, detail=exc.detail)
            self.state = WAITING
            fleet.connect_failed(self, now)
            return
        now = loop.time()
        if self.state == STOPPED or self.offline:  # the fleet shrank (or the run ended) meanwhile
            self.link.leave(self, session)
            if self.state != STOPPED:
                self.state = WAITING
            return
        self.session = session
        self.state = CONNECTED
        self.since = now
        self.attempts = 0
        self.window = min(fleet.scenario.inflight, session.receive_maximum)
        fleet.meter.connected_device(self.info.device_id, now - started, now)
        fleet.connected(self, now)
        await self.link.opened(self, session)

    def backoff(self, rng_value: float) -> float:
        """Seconds before the next attempt: full jitter over an exponentially growing cap."""
        scenario = self.fleet.scenario
        self.attempts += 1
        cap = min(scenario.reconnect_max, scenario.reconnect_min * 2 ** min(self.attempts - 1, 30))
        return float(max(scenario.reconnect_min / 10, cap * rng_value))

    def stop(self, now: float) -> None:
        """Leave the fleet: DISCONNECT, and the behaviour's stop hook."""
        if self.state == STOPPED:
            return
        was_connected = self.state == CONNECTED
        self.state = STOPPED
        self.due = math.inf
        if self.session is not None:
            self.link.leave(self, self.session)
            self.session = None
        if was_connected:
            self.fleet.meter.disconnected_device(self.info.device_id, "stopped", now)
        self.behaviour.stop()
        self.link.stopped(self)

    # ------------------------------------------------------------------ SessionHandler

    def on_puback(self, packet_id: int, reason: int) -> None:
        """An acknowledgement: the message's ack time, or its refusal (MQTT 5)."""
        sent = self.inflight.pop(packet_id, None)
        if sent is None:
            return  # already counted as timed out
        fleet = self.fleet
        now = fleet.loop.time()
        if reason >= 0x80:
            fleet.meter.error("ack", self.dialect.reason(reason_for_ack(reason)), now)
        else:
            current = fleet.meter.current
            current.acked += 1
            took = now - sent
            current.ack.record(took)
            self.worst = max(self.worst, took)
        if self.blocked and len(self.inflight) <= self.window // 2:
            fleet.ready(self)

    def on_pubcomp(self, packet_id: int, reason: int, packet: str) -> None:
        """The end of a QoS 2 exchange: its time from PUBLISH to PUBCOMP (the ack latency, as a
        PUBACK's at QoS 1), or its refusal by a PUBREC or a PUBCOMP (MQTT 5)."""
        if reason < 0x80:
            self.on_puback(packet_id, 0)
            return
        if self.inflight.pop(packet_id, None) is None:
            return  # already counted as timed out
        fleet = self.fleet
        fleet.meter.error("ack", self.dialect.reason(reason_for_ack(reason, packet)), fleet.loop.time())
        if self.blocked and len(self.inflight) <= self.window // 2:
            fleet.ready(self)

    def on_message(self, message: codec.Publish) -> None:
        """A command: the behaviour decides what it means."""
        command = self.dialect.command(self.info, message.topic, message.payload)
        if command is not None:
            self.obey(command)
        session = self.session
        if message.qos and session is not None:
            self.answer(session, codec.receipt(message))

    def obey(self, command: Command) -> None:
        """Hand each setting of ``command`` to the behaviour; answer it when the target wants."""
        now = self.fleet.loop.time()
        results = []
        for attr, value in command.settings:
            obeyed = self.behaviour.command(attr, value)
            results.append(obeyed)
            self.fleet.meter.emit(
                {
                    "event": "command",
                    "device": self.info.device_id,
                    "attr": attr,
                    "value": value[:200],
                    "obeyed": obeyed,
                },
                now,
            )
        if command.reply_topic is not None and self.session is not None:
            payload = self.dialect.reply(command, results)
            packet = codec.publish(command.reply_topic, payload, version=self.link.version)
            self.answer(self.session, packet)

    def answer(self, session: Connection, packet: bytes) -> None:
        """Write an answer to the server (an ack, an RPC response): late for a slow device."""
        delay = self.fleet.scenario.slow_ack_delay
        if self.slow and delay > 0:
            self.fleet.loop.call_later(delay, self._late_answer, session, packet)
        else:
            session.write(packet, self.fleet.loop.time())

    def _late_answer(self, session: Connection, packet: bytes) -> None:
        if session is self.session and session.connected:
            session.write(packet, self.fleet.loop.time())

    def drop(self, reason: str, now: float, *, abrupt: bool) -> None:
        """Leave the broker on purpose (churn, a storm), then reconnect: ``abrupt`` is a cut
        connection (every device sharing it is dropped), else a clean goodbye. Reconnecting is
        the caller's to arrange."""
        session = self.session
        if self.state != CONNECTED or session is None:
            return
        if abrupt:
            self.link.cut(self, reason, now)
            return
        self.link.leave(self, session)
        self.dropped(reason, now)

    def dropped(self, reason: str, now: float) -> None:
        """Its connection is gone on purpose: disconnected, what was in flight failed."""
        self.session = None
        self.state = WAITING
        meter = self.fleet.meter
        meter.disconnected_device(self.info.device_id, reason, now)
        if self.inflight:
            meter.error("ack", reason, now, count=len(self.inflight))
            self.inflight.clear()

    def on_lost(self, reason: str, detail: str) -> None:
        """The connection dropped: count what was in flight, then reconnect after a backoff.

        A connection the server ends soon after accepting it, again and again, is most likely
        taken over by another client with the same id or credentials (each connection of the
        two ends the other's): after ``TAKEN_OVER_LIMIT`` in a row the device gives up, so two
        clients do not push each other out for the rest of the run.
        """
        fleet = self.fleet
        meter = fleet.meter
        now = fleet.loop.time()
        self.session = None
        self.state = WAITING
        taken_over = reason == "server-disconnect-session-taken-over"
        if now - self.since < SHORT_SESSION_S and reason in TAKEOVER_SIGNS:
            self.short_sessions += 1
        else:
            self.short_sessions = 0
        named = "session-taken-over" if taken_over else self.dialect.reason(reason)
        meter.disconnected_device(self.info.device_id, named, now)
        if self.inflight:
            meter.error("ack", "connection-lost", now, count=len(self.inflight))
            self.inflight.clear()
        if self.short_sessions >= TAKEN_OVER_LIMIT:  # give up
            self.state = STOPPED
            self.behaviour.stop()
            named = named if taken_over else "closed-repeatedly"
            detail = (
                f"the server ended this device's connection {self.short_sessions} times within "
                f"{SHORT_SESSION_S:g} s of accepting it ({detail}): {self.dialect.takeover_hint()}; "
                "it gave up"
            )
        meter.error("connection", named, now, device=self.info.device_id, detail=detail)
        if self.state != STOPPED:
            fleet.connect_failed(self, now)

    def on_writable(self) -> None:
        """The socket drains again: send what is due."""
        if self.blocked:
            self.fleet.ready(self)

    # ------------------------------------------------------------------ publishing

    def fire(self, now: float, epoch_ms: float) -> None:
        """Send every sample due by ``now`` that the connection takes; reschedule."""
        if self.held:
            return
        fleet = self.fleet
        interval = fleet.interval
        if interval <= 0:
            self._fire_capacity(now, epoch_ms)
            return
        session = self.session
        if session is None or not session.connected:
            self._miss(now, interval)
            return
        if session.paused:
            self.blocked = True
            return
        due = self.due
        if due <= now:
            if fleet.qos or due + interval <= now:
                self._catch_up(now, epoch_ms, interval)
            else:  # the steady case, what _catch_up does for one sample at QoS 0 (never an overrun)
                per_sample = self.per_sample
                current = fleet.meter.current
                late = now - due
                current.lateness.record(late, per_sample)
                self.worst = max(self.worst, late)
                current.offered += per_sample
                self.due = due + interval
                self._written(self._sample(now, epoch_ms, 0), per_sample, now)
        if not self.blocked:
            fleet.schedule(self)

    def _catch_up(self, now: float, epoch_ms: float, interval: float) -> None:
        """Send the samples due by ``now`` (at most ``MAX_CATCH_UP``; at QoS 1 and 2, what the window
        takes)."""
        current = self.fleet.meter.current
        per_sample = self.per_sample
        qos = self.fleet.qos
        due = self.due
        data = b""
        samples = 0
        while due <= now and samples < MAX_CATCH_UP:
            if qos and len(self.inflight) + per_sample > self.window:
                self.blocked = True
                break
            data += self._sample(now, epoch_ms, qos)
            late = now - due
            current.lateness.record(late, per_sample)
            if late > self.worst and not qos:
                self.worst = late
            if late >= interval:
                current.overruns += per_sample
            samples += 1
            due += interval
        self.due = due
        if samples:
            current.offered += samples * per_sample
            self._written(data, samples * per_sample, now)

    def _miss(self, now: float, interval: float) -> None:
        """Disconnected: every sample due by now is offered and failed (``not-connected``)."""
        missed = 0
        while self.due <= now:
            missed += 1
            self.due += interval
        if missed:
            self.fleet.meter.current.offered += missed * self.per_sample
            self.fleet.meter.error("publish", "not-connected", now, count=missed * self.per_sample)
        self.fleet.schedule(self)

    def _fire_capacity(self, now: float, epoch_ms: float) -> None:
        """Capacity mode: as much as the connection takes (the in-flight window at QoS 1 and 2)."""
        session = self.session
        if session is None or not session.connected:
            return  # rejoins when it reconnects
        if session.paused:
            self.blocked = True
            return
        fleet = self.fleet
        qos = fleet.qos
        per_sample = self.per_sample
        # QoS 1 and 2: fill the in-flight window (acks bring the device back); QoS 0: one chunk
        samples = max(0, (self.window - len(self.inflight)) // per_sample) if qos else CAPACITY_CHUNK
        chunks = [self._sample(now, epoch_ms, qos) for _ in range(samples)]
        if qos:
            self.blocked = True
        if samples:
            fleet.meter.current.offered += samples * per_sample
            self._written(b"".join(chunks), samples * per_sample, now)
        if not qos:
            if session.paused:
                self.blocked = True
            else:
                fleet.ready(self)

    def _sample(self, now: float, epoch_ms: float, qos: int) -> bytes:
        """The messages of the next sample: PUBLISH packets on its topics (QoS 1 and 2: ids from its
        share of the connection's, each in flight from ``now``), unless its link sends them itself."""
        payloads = self.encode(self.behaviour.next_values(now), self.seq, epoch_ms)
        self.seq += 1
        self.last_payload = payloads[-1]
        send = self.send
        if send is not None:
            return send(self, payloads, now, qos)
        if not qos:
            return self.sample.publish(payloads)
        if qos == 2:
            return self._exactly_once(payloads, now)
        chunks: list[bytes] = []
        inflight = self.inflight
        packet_id = self.packet_id
        base, span = self.id_base, self.id_span
        for topic, payload in zip(self.topics, payloads, strict=True):
            packet_id = packet_id % span + 1
            inflight[base + packet_id] = now
            topic.append(chunks, payload, base + packet_id)
        self.packet_id = packet_id
        return b"".join(chunks)

    def _exactly_once(self, payloads: list[bytes], now: float) -> bytes:
        """A sample's QoS 2 PUBLISH packets, each in flight from ``now`` until its PUBCOMP."""
        chunks: list[bytes] = []
        inflight = self.inflight
        packet_id = self.packet_id
        base, span = self.id_base, self.id_span
        for topic, payload in zip(self.topics, payloads, strict=True):
            packet_id = packet_id % span + 1
            inflight[base + packet_id] = now
            topic.append_qos2(chunks, payload, base + packet_id)
        self.packet_id = packet_id
        return b"".join(chunks)

    def _written(self, data: bytes, messages: int, now: float) -> None:
        """``messages`` (in ``data``) go to the connection: counted by the fleet."""
        self.session.write(data, now)  # type: ignore[union-attr] # callers checked
        self.fleet.published(self, messages, now)


def pick_sampled(fleet: int, count: int) -> frozenset[int]:
    """Evenly spaced device indexes for the end-to-end sample."""
    if count <= 0 or fleet <= 0:
        return frozenset()
    if count >= fleet:
        return frozenset(range(fleet))
    step = fleet / count
    return frozenset(int(k * step) for k in range(count))
