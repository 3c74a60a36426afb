"""One MQTT connection as an asyncio protocol: handshake, keep-alive, acks, inbound messages.

A session writes what it is given and reports what it reads; it keeps no queue of its own, so
a caller always knows what has reached the socket. Back-pressure is visible two ways: the
transport's buffer (``paused`` while the kernel does not take more) and, at QoS 1 and 2, the
number of messages in flight, which the caller bounds.

QoS 2 is handled here where it is protocol alone: a successful PUBREC is answered with PUBREL,
an inbound PUBREL with PUBCOMP, and an inbound QoS 2 message the broker sends again before its
PUBREL (a duplicate) is acknowledged again but not delivered twice. What the caller measures
is told: the end of an outbound exchange (``on_pubcomp``) and each new inbound message.

MQTT over WebSocket (:mod:`stress.mqtt.websocket`) is an adapter between the socket and the
session: the session sees a transport as over TCP, with the same pause and resume of writing.

Callbacks (``SessionHandler``) run on the event loop and must stay short.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Protocol, cast

from stress.errors import StressError
from stress.mqtt import codec
from stress.mqtt.codec import MQTT5, ConnectOptions, PacketType
from stress.mqtt.reasons import classify_exception, connack_reason, describe_connack, reason_name
from stress.mqtt.websocket import Upgrade, WebSocketClient
from wire.mqtt import ProtocolError

#: Bytes the transport may hold before ``pause_writing``; small, so "sent" stays close to "in the kernel".
WRITE_HIGH_WATER = 32 * 1024
#: Seconds ``Session.close`` leaves the broker to close the connection after DISCONNECT.
CLOSE_WAIT_S = 1.0


class SessionHandler(Protocol):
    """What a session tells its owner."""

    def on_puback(self, packet_id: int, reason: int) -> None:
        """A PUBACK arrived (``reason`` >= 0x80 is a refusal, MQTT 5 only)."""

    def on_pubcomp(self, packet_id: int, reason: int, packet: str) -> None:
        """A QoS 2 exchange ended: its PUBCOMP arrived (``packet`` is ``"pubcomp"``), or a PUBREC
        refused the message (``"pubrec"``, no PUBREL follows); ``reason`` >= 0x80 is a refusal
        (MQTT 5 only)."""

    def on_message(self, message: codec.Publish) -> None:
        """A PUBLISH arrived on a subscription (acknowledge QoS 1 and 2 with ``Session.ack``)."""

    def on_lost(self, reason: str, detail: str) -> None:
        """The connection ended without ``Session.close`` being called."""

    def on_writable(self) -> None:
        """The transport's buffer drained below its low-water mark."""


class ConnectError(StressError):
    """Connecting failed: ``reason`` is a name from :mod:`stress.mqtt.reasons`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Session(asyncio.Protocol):
    """The protocol object of one connection; build it with :func:`open_session`."""

    def __init__(self, options: ConnectOptions, handler: SessionHandler | None) -> None:
        self.options = options
        self.version = options.version
        self.handler = handler
        self.transport: asyncio.Transport | None = None
        self.connack: asyncio.Future[codec.Connack] = asyncio.get_running_loop().create_future()
        self.connected = False
        self.paused = False
        #: MQTT 5: the broker's Receive Maximum (QoS 1 messages it takes in flight from us).
        self.receive_maximum = 65_535
        self.keepalive = options.keepalive
        self.last_out = 0.0
        self.ping_sent = 0.0
        self.pongs = 0
        self._reader = codec.PacketReader()
        self._closing = False
        self._lost_reason: tuple[str, str] | None = None
        self._subacks: dict[int, asyncio.Future[list[int]]] = {}
        self._next_sub_id = 0
        #: Inbound QoS 2 messages delivered whose PUBREL has not come yet (their packet ids).
        self._unreleased: set[int] = set()
        #: Set by ``close`` when it leaves the broker to close the connection; done once closed.
        self.gone: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send CONNECT as soon as the socket is up (both event loops set TCP_NODELAY themselves)."""
        self.transport = cast(asyncio.Transport, transport)  # a stream transport (uvloop's is not a subclass)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.transport.write(codec.connect(self.options))
        self.last_out = asyncio.get_running_loop().time()

    def data_received(self, data: bytes) -> None:
        """Parse what arrived; PUBACKs, the commonest packet, go first (QoS 2's after the rest)."""
        try:
            packets = self._reader.feed(data)
        except ProtocolError as exc:
            self._fail("protocol", str(exc))
            return
        handler = self.handler
        replies = b""  # QoS 2's answers (PUBREC again, PUBREL, PUBCOMP), written at once after the batch
        for first, body in packets:
            kind = first >> 4
            if kind == PacketType.PUBACK:
                if handler is not None:
                    handler.on_puback((body[0] << 8) | body[1], body[2] if len(body) > 2 else 0)
            elif PacketType.PUBLISH <= kind <= PacketType.PUBCOMP:  # PUBLISH, and QoS 2 (PUBACK went first)
                reply = (
                    self._on_publish(first, body)
                    if kind == PacketType.PUBLISH
                    else self._on_exactly_once(kind, body)
                )
                if reply is None:
                    return
                replies += reply
            elif kind == PacketType.PINGRESP:
                self.ping_sent = 0.0
                self.pongs += 1
            elif kind == PacketType.CONNACK:
                self._on_connack(body)
            elif kind == PacketType.SUBACK:
                self._on_suback(body)
            elif kind == PacketType.DISCONNECT:
                self._on_disconnect(body)
                return
            else:
                self._fail("protocol", f"unexpected packet type {kind} from the broker")
                return
        if replies:
            self.write(replies, asyncio.get_running_loop().time())

    def connection_lost(self, exc: Exception | None) -> None:
        """Report the end of the connection, unless it was asked for."""
        was_connected = self.connected
        self.connected = False
        self.transport = None
        reason, detail = self._lost_reason or (
            (classify_exception(exc), str(exc) or type(exc).__name__)
            if exc is not None
            else ("connection-lost", "the broker closed the connection")
        )
        if not self.connack.done():
            if reason == "connection-lost":
                reason = "closed-before-connack"
                if self._lost_reason is None:
                    detail = "the broker closed the connection before CONNACK"
            self.connack.set_exception(ConnectError(reason, detail))
            self.connack.exception()  # retrieved here: the opener may already have given up
        for waiter in self._subacks.values():
            if not waiter.done():
                waiter.set_exception(ConnectError(reason, detail))
        self._subacks.clear()
        if self.gone is not None and not self.gone.done():
            self.gone.set_result(None)
        if was_connected and not self._closing and self.handler is not None:
            self.handler.on_lost(reason, detail)

    def pause_writing(self) -> None:
        """The kernel stopped taking bytes: the caller must hold back."""
        self.paused = True

    def resume_writing(self) -> None:
        """The kernel takes bytes again."""
        self.paused = False
        if self.handler is not None and self.connected:
            self.handler.on_writable()

    # ------------------------------------------------------------------ use

    def write(self, data: bytes, now: float) -> None:
        """Write pre-encoded packets (the caller checks ``connected`` and ``paused``)."""
        transport = self.transport
        if transport is not None:
            transport.write(data)
            self.last_out = now

    def ack(self, packet_id: int, qos: int = 1) -> None:
        """Acknowledge an inbound PUBLISH: PUBACK at QoS 1, PUBREC at QoS 2 (its PUBREL is answered here)."""
        if self.transport is not None:
            answer = codec.pubrec(packet_id) if qos == 2 else codec.puback(packet_id, self.version)
            self.transport.write(answer)

    async def subscribe(self, filters: list[tuple[str, int]], timeout: float) -> list[int]:
        """SUBSCRIBE and wait for the SUBACK: the granted QoS (or reason code) per filter."""
        if self.transport is None:
            raise ConnectError("connection-lost", "not connected")
        self._next_sub_id = self._next_sub_id % 65_535 + 1
        packet_id = self._next_sub_id
        waiter: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._subacks[packet_id] = waiter
        self.transport.write(codec.subscribe(packet_id, filters, self.version))
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            raise ConnectError("suback-timeout", f"no SUBACK within {timeout:g} s") from None
        finally:
            self._subacks.pop(packet_id, None)

    def keepalive_due(self, now: float) -> str | None:
        """Send PINGREQ when idle; returns ``"keepalive-timeout"`` when a ping went unanswered.

        Called about once a second. A ping goes out after three quarters of the keep-alive
        without writing; an answer is expected within half of it (at least one second).
        """
        if not self.keepalive or self.transport is None:
            return None
        if self.ping_sent:
            if now - self.ping_sent > max(self.keepalive / 2, 1.0):
                self._fail("keepalive-timeout", f"no PINGRESP within {max(self.keepalive / 2, 1.0):g} s")
                return "keepalive-timeout"
            return None
        if now - self.last_out >= self.keepalive * 0.75:
            self.transport.write(codec.PINGREQ)
            self.last_out = self.ping_sent = now
        return None

    def close(self) -> None:
        """DISCONNECT, and leave the broker to close the connection; no ``on_lost`` follows.

        The side that closes first keeps the connection's address in TIME_WAIT for a minute.
        When that is the broker, this machine's local ports stay free for the next run (a
        fleet of tens of thousands would otherwise find them taken). A broker that has not
        closed within ``CLOSE_WAIT_S`` has the connection closed here.
        """
        if self._closing:
            return
        self._closing = True
        transport = self.transport
        if transport is None:
            return
        if self.connected:
            transport.write(codec.disconnect(self.version))
            loop = asyncio.get_running_loop()
            self.gone = loop.create_future()
            loop.call_later(CLOSE_WAIT_S, transport.close)
        else:
            transport.close()

    def abort(self) -> None:
        """Drop the connection at once (no DISCONNECT, buffered bytes discarded); no ``on_lost``."""
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    def explain(self, reason: str, detail: str) -> None:
        """Why the connection is ending, when nothing said so before (the WebSocket layer's word)."""
        if self._lost_reason is None:
            self._lost_reason = (reason, detail)

    # ------------------------------------------------------------------ internals

    def _fail(self, reason: str, detail: str) -> None:
        """End the connection at once for ``reason``: what ``on_lost`` (or the opener) is told."""
        self._lost_reason = (reason, detail)
        if self.transport is not None:
            self.transport.abort()

    def _on_publish(self, first: int, body: bytes) -> bytes | None:
        """An inbound message to the handler, once: what to answer at once (a QoS 2 message sent
        again before its PUBREL is acknowledged again, not delivered); None when it is not MQTT."""
        try:
            message = codec.parse_publish(first, body, self.version)
        except ProtocolError as exc:
            self._fail("protocol", f"bad PUBLISH: {exc}")
            return None
        if message.qos == 2:
            if message.packet_id in self._unreleased:
                return codec.pubrec(message.packet_id)
            self._unreleased.add(message.packet_id)
        if self.handler is not None:
            self.handler.on_message(message)
        return b""

    def _on_exactly_once(self, kind: int, body: bytes) -> bytes | None:
        """PUBREC, PUBREL or PUBCOMP: what to answer (PUBREL to a PUBREC that accepts, PUBCOMP to a
        PUBREL); the end of an outbound exchange goes to the handler. None when it is not MQTT."""
        if len(body) < 2:
            self._fail("protocol", f"{PacketType(kind).name} shorter than two bytes")
            return None
        packet_id = (body[0] << 8) | body[1]
        reason = body[2] if len(body) > 2 and self.version == MQTT5 else 0
        if kind == PacketType.PUBREL:  # the broker releases an inbound message
            self._unreleased.discard(packet_id)
            return codec.pubcomp(packet_id)
        if kind == PacketType.PUBREC and reason < 0x80:
            return codec.pubrel(packet_id)
        # a PUBCOMP, or a PUBREC refusing the message (no PUBREL follows a refusal)
        if self.handler is not None:
            self.handler.on_pubcomp(packet_id, reason, "pubcomp" if kind == PacketType.PUBCOMP else "pubrec")
        return b""

    def _on_disconnect(self, body: bytes) -> None:
        code, properties = codec.parse_disconnect(body, self.version)
        detail = properties.get(codec.Property.REASON_STRING, "")
        self._fail(
            "server-disconnect-" + reason_name(code),
            f"the broker disconnected this client (reason {code:#04x}) {detail}".strip(),
        )

    def _on_connack(self, body: bytes) -> None:
        if self.connack.done():
            self._fail("protocol", "a second CONNACK")
            return
        try:
            answer = codec.parse_connack(body, self.version)
        except ProtocolError as exc:
            self._fail("protocol", f"bad CONNACK: {exc}")
            return
        if answer.code:
            self._lost_reason = (
                connack_reason(answer.code, self.version),
                describe_connack(answer.code, self.version),
            )
            self.connack.set_exception(ConnectError(*self._lost_reason))
            if self.transport is not None:
                self.transport.close()
            return
        if self.version == MQTT5:
            self.receive_maximum = answer.properties.get(codec.Property.RECEIVE_MAXIMUM, 65_535)
            self.keepalive = answer.properties.get(codec.Property.SERVER_KEEP_ALIVE, self.keepalive)
        self.connected = True
        self.connack.set_result(answer)

    def _on_suback(self, body: bytes) -> None:
        try:
            packet_id, codes = codec.parse_suback(body, self.version)
        except ProtocolError as exc:
            self._fail("protocol", f"bad SUBACK: {exc}")
            return
        waiter = self._subacks.get(packet_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(codes)


async def wait_closed(sessions: Iterable[Session]) -> None:
    """Until every one of ``sessions`` is closed (``Session.close`` bounds how long)."""
    pending = [s.gone for s in sessions if s.gone is not None and not s.gone.done()]
    if pending:
        await asyncio.wait(pending, timeout=CLOSE_WAIT_S * 2)


async def open_session(
    host: str,
    port: int,
    options: ConnectOptions,
    handler: SessionHandler | None = None,
    *,
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float = 10.0,
    websocket: Upgrade | None = None,
) -> Session:
    """Connect, send CONNECT and wait for a successful CONNACK; raises :class:`ConnectError`.

    ``timeout`` bounds the whole handshake (TCP, TLS, the WebSocket upgrade, CONNACK): a broker
    that never answers costs the caller at most that long. With ``websocket``, MQTT travels over
    a WebSocket opened with that upgrade (``tls`` makes it ``wss``).
    """
    loop = asyncio.get_running_loop()
    made: list[Session] = []
    carriers: list[WebSocketClient] = []

    def factory() -> asyncio.Protocol:
        made.append(Session(options, handler))
        if websocket is None:
            return made[-1]
        carriers.append(WebSocketClient(made[-1], websocket))
        return carriers[-1]

    try:
        async with asyncio.timeout(timeout):
            await loop.create_connection(
                factory, host, port, ssl=tls, server_hostname=server_hostname if tls else None
            )
            await made[0].connack
    except TimeoutError:
        if made:
            made[0].abort()
        for carrier in carriers:
            carrier.abort()
        upgrading = " (no answer to the WebSocket upgrade)" if carriers and not carriers[0].open else ""
        detail = f"no answer from {host}:{port} within {timeout:g} s{upgrading}"
        raise ConnectError("timeout", detail) from None
    except ConnectError:
        raise
    except (OSError, ssl.SSLError) as exc:
        raise ConnectError(classify_exception(exc), f"{host}:{port}: {exc}") from None
    return made[0]


def reason_for_ack(code: int, packet: str = "puback") -> str:
    """The failure reason for a refusing PUBACK, PUBREC or PUBCOMP (``packet``; MQTT 5 only)."""
    return f"{packet}-{reason_name(code)}"
