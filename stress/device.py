"""One simulated device: its connection, its schedule, and what it publishes.

A device is driven by the engine's clock, never by a task of its own: the engine calls
``fire`` when the device's next message is due (or when it can send again after
back-pressure). Each message has an absolute due time; how late it went out is measured,
and a device that fell behind sends what is due at once, counting every late message.

Failures never stop the fleet: a device that cannot connect retries with jittered
exponential backoff while the others go on; while it is away, the messages it should have
sent count as failed (``not-connected``).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from stress.behaviours import Behaviour, DeviceInfo
from stress.mqtt import codec
from stress.mqtt.codec import ConnectOptions, TopicCode
from stress.mqtt.session import ConnectError, Session, reason_for_ack
from stress.targets.base import Command, Encoder, Presence

if TYPE_CHECKING:
    from stress.engine import Engine

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


class Device:
    """A device of the fleet (also the handler of its MQTT session)."""

    __slots__ = (
        "attempts",
        "behaviour",
        "blocked",
        "counted",
        "due",
        "encode",
        "engine",
        "held",
        "id_base",
        "id_span",
        "inflight",
        "info",
        "joined",
        "last_payload",
        "offline",
        "offset",
        "options",
        "packet_id",
        "per_sample",
        "presence",
        "queued",
        "sample",
        "sampled",
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
        engine: Engine,
        info: DeviceInfo,
        behaviour: Behaviour,
        *,
        topics: list[TopicCode],
        encode: Encoder,
        options: ConnectOptions,
        sampled: bool,
        presence: Presence | None = None,
    ) -> None:
        self.engine = engine
        #: Its retained status (``online``, ``offline``; the will says ``lost``), if the target has one.
        self.presence = presence
        self.info = info
        self.behaviour = behaviour
        self.topics = topics
        self.sample = codec.SampleCode(topics)
        self.encode = encode
        self.options = options
        self.per_sample = len(topics)
        self.sampled = sampled
        self.session: Session | None = None
        self.state = IDLE
        self.inflight: dict[int, float] = {}
        self.window = engine.scenario.inflight
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
        #: Its slowest message this second (seconds: ack time at QoS 1, lateness at QoS 0).
        self.worst = 0.0
        self.offset = 0.0
        self.slot = -1
        self.joined = False
        self.blocked = False
        self.queued = False
        #: Whether the engine counts it in the fleet (its first connection attempt has finished).
        self.counted = False

    # ------------------------------------------------------------------ connection

    async def connect(self) -> None:
        """One connection attempt (run by the engine's connector, which bounds how many at once)."""
        engine = self.engine
        if self.offline:  # deactivated while it waited for its turn
            self.state = WAITING
            return
        loop = engine.loop
        started = loop.time()
        self.state = CONNECTING
        try:
            session = await self._open()
        except ConnectError as exc:
            now = loop.time()
            reason = engine.target.reason(exc.reason)
            engine.meter.error("connect", reason, now, device=self.info.device_id, detail=exc.detail)
            self.state = WAITING
            engine.connect_failed(self, now)
            return
        now = loop.time()
        if self.state == STOPPED or self.offline:  # the fleet shrank (or the run ended) meanwhile
            self._leave(session)
            if self.state != STOPPED:
                self.state = WAITING
            return
        self.session = session
        self.state = CONNECTED
        self.since = now
        self.attempts = 0
        self.window = min(engine.scenario.inflight, session.receive_maximum)
        engine.meter.connected_device(self.info.device_id, now - started, now)
        engine.connected(self, now)
        if self.presence is not None:
            session.write(self.presence.say("online", time.time() * 1000), now)
        filters = engine.target.command_filters(self.info)
        if filters:
            try:
                granted = await session.subscribe(
                    [(f, 1) for f in filters], timeout=engine.scenario.connect_timeout
                )
            except ConnectError as exc:
                engine.meter.error(
                    "subscribe", exc.reason, loop.time(), device=self.info.device_id, detail=exc.detail
                )
                return
            if any(code >= 0x80 for code in granted):
                engine.meter.error(
                    "subscribe",
                    "suback-refused",
                    loop.time(),
                    device=self.info.device_id,
                    detail=f"the broker refused the command subscription {filters} ({granted})",
                )

    async def _open(self) -> Session:
        """A connection of its own (raises :class:`ConnectError`)."""
        return await self.engine.open_session(self.options, self)

    def _leave(self, session: Session) -> None:
        """End its part of ``session`` cleanly (its own connection: its goodbye, then DISCONNECT)."""
        if self.presence is not None and session.connected:
            session.write(self.presence.say("offline", time.time() * 1000), self.engine.loop.time())
        session.close()

    def backoff(self, rng_value: float) -> float:
        """Seconds before the next attempt: full jitter over an exponentially growing cap."""
        scenario = self.engine.scenario
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
            self._leave(self.session)
            self.session = None
        if was_connected:
            self.engine.meter.disconnected_device(self.info.device_id, "stopped", now)
        self.behaviour.stop()

    # ------------------------------------------------------------------ SessionHandler

    def on_puback(self, packet_id: int, reason: int) -> None:
        """An acknowledgement: the message's ack time, or its refusal (MQTT 5)."""
        sent = self.inflight.pop(packet_id, None)
        if sent is None:
            return  # already counted as timed out
        engine = self.engine
        now = engine.loop.time()
        if reason >= 0x80:
            engine.meter.error("ack", engine.target.reason(reason_for_ack(reason)), now)
        else:
            current = engine.meter.current
            current.acked += 1
            took = now - sent
            current.ack.record(took)
            self.worst = max(self.worst, took)
        if self.blocked and len(self.inflight) <= self.window // 2:
            engine.ready(self)

    def on_message(self, message: codec.Publish) -> None:
        """A command: the behaviour decides what it means."""
        command = self.engine.target.command(self.info, message.topic, message.payload)
        if command is not None:
            self.obey(command)
        session = self.session
        if message.qos and session is not None:
            self.answer(session, codec.puback(message.packet_id, session.version))

    def obey(self, command: Command) -> None:
        """Hand each setting of ``command`` to the behaviour; answer it when the target wants."""
        engine = self.engine
        now = engine.loop.time()
        results = []
        for attr, value in command.settings:
            obeyed = self.behaviour.command(attr, value)
            results.append(obeyed)
            engine.meter.emit(
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
            payload = engine.target.reply(command, results)
            packet = codec.publish(command.reply_topic, payload, version=self.session.version)
            self.answer(self.session, packet)

    def answer(self, session: Session, packet: bytes) -> None:
        """Write an answer to the server (an ack, an RPC response): late for a slow device."""
        delay = self.engine.scenario.slow_ack_delay
        if self.slow and delay > 0:
            self.engine.loop.call_later(delay, self._late_answer, session, packet)
        else:
            session.write(packet, self.engine.loop.time())

    def _late_answer(self, session: Session, packet: bytes) -> None:
        if session is self.session and session.connected:
            session.write(packet, self.engine.loop.time())

    def drop(self, reason: str, now: float, *, abrupt: bool) -> None:
        """Leave the broker on purpose (churn, a storm), then reconnect: ``abrupt`` is a cut
        connection, else a clean DISCONNECT. Reconnecting is the caller's to arrange."""
        session = self.session
        if self.state != CONNECTED or session is None:
            return
        self.session = None
        self.state = WAITING
        if abrupt:
            session.abort()
        else:
            self._leave(session)
        engine = self.engine
        engine.meter.disconnected_device(self.info.device_id, reason, now)
        if self.inflight:
            engine.meter.error("ack", reason, now, count=len(self.inflight))
            self.inflight.clear()

    def on_lost(self, reason: str, detail: str) -> None:
        """The connection dropped: count what was in flight, then reconnect after a backoff.

        A connection the server ends soon after accepting it, again and again, is most likely
        taken over by another client with the same id or credentials (each connection of the
        two ends the other's): after ``TAKEN_OVER_LIMIT`` in a row the device gives up, so two
        clients do not push each other out for the rest of the run.
        """
        engine = self.engine
        now = engine.loop.time()
        self.session = None
        self.state = WAITING
        taken_over = reason == "server-disconnect-session-taken-over"
        if now - self.since < SHORT_SESSION_S and reason in TAKEOVER_SIGNS:
            self.short_sessions += 1
        else:
            self.short_sessions = 0
        named = "session-taken-over" if taken_over else engine.target.reason(reason)
        engine.meter.disconnected_device(self.info.device_id, named, now)
        if self.inflight:
            engine.meter.error("ack", "connection-lost", now, count=len(self.inflight))
            self.inflight.clear()
        if self.short_sessions >= TAKEN_OVER_LIMIT:  # give up
            self.state = STOPPED
            self.behaviour.stop()
            named = named if taken_over else "closed-repeatedly"
            detail = (
                f"the server ended this device's connection {self.short_sessions} times within "
                f"{SHORT_SESSION_S:g} s of accepting it ({detail}): {engine.target.takeover_hint()}; "
                "it gave up"
            )
        engine.meter.error("connection", named, now, device=self.info.device_id, detail=detail)
        if self.state != STOPPED:
            engine.connect_failed(self, now)

    def on_writable(self) -> None:
        """The socket drains again: send what is due."""
        if self.blocked:
            self.engine.ready(self)

    # ------------------------------------------------------------------ publishing

    def fire(self, now: float, epoch_ms: float) -> None:
        """Send every sample due by ``now`` that the connection takes; reschedule."""
        if self.held:
            return
        engine = self.engine
        interval = engine.interval
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
            if engine.qos or due + interval <= now:
                self._catch_up(now, epoch_ms, interval)
            else:  # the steady case, what _catch_up does for one sample at QoS 0 (never an overrun)
                per_sample = self.per_sample
                current = engine.meter.current
                late = now - due
                current.lateness.record(late, per_sample)
                self.worst = max(self.worst, late)
                current.offered += per_sample
                self.due = due + interval
                self._written(self._sample(now, epoch_ms, 0), per_sample, now)
        if not self.blocked:
            engine.schedule(self)

    def _catch_up(self, now: float, epoch_ms: float, interval: float) -> None:
        """Send the samples due by ``now`` (at most ``MAX_CATCH_UP``; at QoS 1 what the window takes)."""
        current = self.engine.meter.current
        per_sample = self.per_sample
        qos = self.engine.qos
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
            self.engine.meter.current.offered += missed * self.per_sample
            self.engine.meter.error("publish", "not-connected", now, count=missed * self.per_sample)
        self.engine.schedule(self)

    def _fire_capacity(self, now: float, epoch_ms: float) -> None:
        """Capacity mode: as much as the connection takes (the in-flight window at QoS 1)."""
        session = self.session
        if session is None or not session.connected:
            return  # rejoins when it reconnects
        if session.paused:
            self.blocked = True
            return
        engine = self.engine
        qos = engine.qos
        per_sample = self.per_sample
        # QoS 1: fill the in-flight window (acks bring the device back); QoS 0: one chunk
        samples = max(0, (self.window - len(self.inflight)) // per_sample) if qos else CAPACITY_CHUNK
        chunks = [self._sample(now, epoch_ms, qos) for _ in range(samples)]
        if qos:
            self.blocked = True
        if samples:
            self.engine.meter.current.offered += samples * per_sample
            self._written(b"".join(chunks), samples * per_sample, now)
        if not engine.qos:
            if session.paused:
                self.blocked = True
            else:
                engine.ready(self)

    def _sample(self, now: float, epoch_ms: float, qos: int) -> bytes:
        """The packets of the next sample (QoS 1: ids taken, in flight from ``now``)."""
        payloads = self.encode(self.behaviour.next_values(now), self.seq, epoch_ms)
        self.seq += 1
        self.last_payload = payloads[-1]
        if not qos:
            return self.sample.publish(payloads)
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

    def _written(self, data: bytes, messages: int, now: float) -> None:
        """``messages`` (in ``data``) go to the socket: count them; one in ``sample_every`` is an event."""
        self.session.write(data, now)  # type: ignore[union-attr] # callers checked
        engine = self.engine
        engine.meter.current.sent += messages
        if self.sampled:
            engine.meter.current.e2e_expected += messages
        engine.sample_countdown -= messages
        if engine.sample_countdown <= 0:
            engine.sample_countdown = engine.scenario.sample_every
            engine.meter.emit(
                {
                    "event": "published",
                    "device": self.info.device_id,
                    "topic": self.topics[-1].topic,
                    "payload": self.last_payload[:200].decode("utf-8", "replace"),
                },
                now,
            )


def pick_sampled(fleet: int, count: int) -> frozenset[int]:
    """Evenly spaced device indexes for the end-to-end sample."""
    if count <= 0 or fleet <= 0:
        return frozenset()
    if count >= fleet:
        return frozenset(range(fleet))
    step = fleet / count
    return frozenset(int(k * step) for k in range(count))
