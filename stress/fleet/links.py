"""How a device's messages travel over MQTT: a connection of its own, opened by the run's
:class:`Dialer` (the broker's name looked up once, TLS set up once, over TCP or WebSocket).

A :class:`MqttLink` is one device's connection: it logs in with the device's options (and
its Last Will, when the target has a presence topic), says ``online`` once connected and
``offline`` before a clean DISCONNECT, and subscribes to the device's command topics; the device
writes its samples to the connection as PUBLISH packets itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable

from stress.fleet.device import Connection, Device
from stress.messages import Presence
from stress.mqtt.codec import ConnectOptions
from stress.mqtt.session import ConnectError, Session, SessionHandler, open_session
from stress.mqtt.tls import client_context
from stress.mqtt.websocket import Upgrade
from stress.scenario import Broker

#: Opens a connection to the run's broker: ``await dial(options, handler)``.
Dial = Callable[[ConnectOptions, SessionHandler], Awaitable[Session]]


def tls_context(broker: Broker) -> tuple[ssl.SSLContext | None, str | None]:
    """The TLS context of connections to ``broker`` (None without TLS), and the name to check.

    Raises:
        ScenarioError: a CA, certificate or key file that cannot be used (one line naming it).
    """
    if not broker.tls:
        return None, None
    context = client_context(
        ca_file=broker.ca_file, insecure=broker.insecure, cert=broker.cert, key=broker.key
    )
    return context, broker.host


def upgrade(broker: Broker) -> Upgrade | None:
    """The WebSocket upgrade of connections to ``broker`` (None: MQTT over TCP)."""
    if broker.transport != "websocket":
        return None
    host = f"[{broker.host}]" if ":" in broker.host else broker.host
    return Upgrade(f"{host}:{broker.port}", broker.ws_path)


class Dialer:
    """Connections to one broker, each with the same address, TLS and timeout."""

    def __init__(self, broker: Broker, timeout: float) -> None:
        self.broker = broker
        self.timeout = timeout
        self.tls, self.server_hostname = tls_context(broker)
        self.upgrade = upgrade(broker)
        #: Where devices connect: the broker's host, or its address once :meth:`look_up` found one.
        self.address = broker.host

    async def look_up(self) -> None:
        """Look the broker's name up once, not once per connection (a fleet of thousands would
        send a DNS query each): its first address that takes a TCP connection is used for the
        whole run. An address given as such, or a name that does not resolve or connect, is used
        as it is, so each attempt reports its own failure."""
        broker = self.broker
        try:
            ipaddress.ip_address(broker.host)
            return
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        try:
            found = await loop.getaddrinfo(broker.host, broker.port, type=socket.SOCK_STREAM)
        except OSError:
            return
        for address in dict.fromkeys(str(entry[4][0]) for entry in found):
            try:
                async with asyncio.timeout(self.timeout):
                    transport, _ = await loop.create_connection(asyncio.Protocol, address, broker.port)
            except (OSError, TimeoutError):
                continue
            transport.close()
            self.address = address
            return

    async def open(self, options: ConnectOptions, handler: SessionHandler | None) -> Session:
        """A connection to the broker (raises :class:`ConnectError`)."""
        return await open_session(
            self.address,
            self.broker.port,
            options,
            handler,
            tls=self.tls,
            server_hostname=self.server_hostname,
            timeout=self.timeout,
            websocket=self.upgrade,
        )


class MqttLink:
    """One device's own MQTT connection."""

    __slots__ = ("dial", "filters", "options", "presence", "timeout", "version")

    #: (The device writes its samples as PUBLISH packets itself.)
    send = None

    def __init__(
        self,
        dial: Dial,
        options: ConnectOptions,
        *,
        timeout: float,
        presence: Presence | None = None,
        filters: list[str] | None = None,
    ) -> None:
        self.dial = dial
        self.options = options
        self.version = options.version
        self.timeout = timeout
        #: Its retained status (``online``, ``offline``; the will says ``lost``), if the target has one.
        self.presence = presence
        #: Topic filters of its commands.
        self.filters = filters or []

    async def open(self, device: Device) -> Session:
        """Connect as the device (it handles the session's events)."""
        return await self.dial(self.options, device)

    async def opened(self, device: Device, connection: Connection) -> None:
        """Say ``online``; subscribe to the commands (a refusal is counted, the device goes on)."""
        if not isinstance(connection, Session):  # (always one: what open returned)
            return
        if self.presence is not None:
            connection.write(self.presence.say("online", time.time() * 1000), device.fleet.loop.time())
        if not self.filters:
            return
        meter = device.fleet.meter
        try:
            # At QoS 2 a run's commands may come exactly once too (a QoS 1 subscription would downgrade them)
            qos = max(1, device.fleet.qos)
            granted = await connection.subscribe([(f, qos) for f in self.filters], timeout=self.timeout)
        except ConnectError as exc:
            now = device.fleet.loop.time()
            meter.error("subscribe", exc.reason, now, device=device.info.device_id, detail=exc.detail)
            return
        if any(code >= 0x80 for code in granted):
            meter.error(
                "subscribe",
                "suback-refused",
                device.fleet.loop.time(),
                device=device.info.device_id,
                detail=f"the broker refused the command subscription {self.filters} ({granted})",
            )

    def leave(self, device: Device, connection: Connection) -> None:
        """Say ``offline``, then DISCONNECT."""
        if not isinstance(connection, Session):  # (always one: what open returned)
            return
        if self.presence is not None and connection.connected:
            connection.write(self.presence.say("offline", time.time() * 1000), device.fleet.loop.time())
        connection.close()

    def cut(self, device: Device, reason: str, now: float) -> None:
        """Drop the connection at once (the broker publishes the will)."""
        session = device.session
        if isinstance(session, Session):
            session.abort()
        device.dropped(reason, now)

    def stopped(self, device: Device) -> None:
        """Nothing is shared: nothing to release."""
