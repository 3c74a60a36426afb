"""Devices behind ThingsBoard gateways: many devices share one MQTT connection.

A :class:`Gateway` is one connection, logged in with a gateway device's token; it is opened
when its first device connects and shared by the others (a failure to open it is each
waiting device's failure, retried with its own backoff). A member's :class:`GatewayLink`
carries it: "connecting" announces it on ``v1/gateway/connect``, leaving is
``v1/gateway/disconnect``, and its samples go to ``v1/gateway/telemetry`` on the gateway's
connection with its own schedule, so pausing, churn and lateness stay per device.

At QoS 1 each member owns a fixed range of the connection's packet ids (twice its in-flight
window), so an acknowledgement finds its device by arithmetic. When the gateway's connection
drops, every member loses it; a storm cuts the gateways' connections.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from stress.fleet.device import CONNECTED, Connection, Device, Fleet
from stress.fleet.links import Dial
from stress.mqtt import codec
from stress.mqtt.codec import ConnectOptions
from stress.mqtt.session import ConnectError, Session
from stress.thingsboard.mqtt_api import GATEWAY_CONNECT, GATEWAY_DISCONNECT, GATEWAY_RPC, rpc_command

#: MQTT packet ids of one connection.
PACKET_IDS = 65_535


def most_members(inflight: int) -> int:
    """The most devices one gateway connection carries at QoS 1 with ``inflight`` per device."""
    return PACKET_IDS // (2 * inflight)


class Gateway:
    """One gateway connection and the devices it carries (the handler of its session)."""

    def __init__(self, fleet: Fleet, dial: Dial, name: str, options: ConnectOptions) -> None:
        self.fleet = fleet
        self.dial = dial
        self.name = name
        self.options = options
        self.session: Session | None = None
        self.members: dict[str, Device] = {}
        #: Members by their share of the packet ids.
        self.by_slot: dict[int, Device] = {}
        self.span = 2 * fleet.scenario.inflight  # see most_members
        self._opening: asyncio.Task[Session] | None = None

    def join(self, member: Device, slot: int) -> None:
        """Give ``member`` its packet ids (``slot`` wraps past the most the connection has: the
        target checks the timeline's fleet fits; only ``stress scale`` past it can share ids)."""
        slot %= PACKET_IDS // self.span
        member.id_base = slot * self.span
        member.id_span = self.span
        self.by_slot[slot] = member
        self.members[member.info.device_id] = member

    async def ready(self) -> Session:
        """The gateway's connection, opened by the first member that needs it."""
        session = self.session
        if session is not None and session.connected:
            return session
        if self._opening is None or self._opening.done():
            self._opening = asyncio.create_task(self._open())
        return await asyncio.shield(self._opening)

    async def _open(self) -> Session:
        fleet = self.fleet
        session = await self.dial(self.options, self)
        try:
            granted = await session.subscribe([(GATEWAY_RPC, 1)], timeout=fleet.scenario.connect_timeout)
        except ConnectError:
            session.abort()
            raise
        if any(code >= 0x80 for code in granted):
            fleet.meter.error(
                "subscribe",
                "suback-refused",
                fleet.loop.time(),
                device=self.name,
                detail=f"the server refused the gateway's RPC subscription ({granted})",
            )
        self.session = session
        return session

    def announce(self, member: Device, topic: str) -> None:
        """``v1/gateway/connect`` or ``disconnect`` for a member."""
        session = self.session
        if session is not None and session.connected:
            payload = json.dumps({"device": member.info.device_id}).encode()
            session.write(codec.publish(topic, payload, version=session.version), self.fleet.loop.time())

    def leave(self, member: Device) -> None:
        """A member leaves for good or for a while: the server hears it disconnect."""
        self.announce(member, GATEWAY_DISCONNECT)

    async def close(self) -> None:
        """DISCONNECT the gateway (its members have left)."""
        if self._opening is not None and not self._opening.done():
            self._opening.cancel()
        session, self.session = self.session, None
        if session is not None:
            session.close()
            if session.gone is not None:
                await asyncio.wait([session.gone], timeout=2.0)

    def abort(self, reason: str) -> None:
        """Cut the connection (a storm); every member loses it and reconnects."""
        session = self.session
        if session is not None:
            session.abort()
            self.session = None
            now = self.fleet.loop.time()
            for member in list(self.members.values()):
                if member.state == CONNECTED:
                    member.dropped(reason, now)

    # ------------------------------------------------------------------ SessionHandler

    def on_puback(self, packet_id: int, reason: int) -> None:
        member = self.by_slot.get((packet_id - 1) // self.span)
        if member is not None:
            member.on_puback(packet_id, reason)

    def on_pubcomp(self, packet_id: int, reason: int, packet: str) -> None:
        """(ThingsBoard takes no QoS 2: the run refuses it before a gateway connects.)"""

    def on_message(self, message: codec.Publish) -> None:
        session = self.session
        if message.topic == GATEWAY_RPC:
            try:
                request: Any = json.loads(message.payload)
            except (ValueError, UnicodeDecodeError):
                request = None
            name = request.get("device") if isinstance(request, dict) else None
            member = self.members.get(name) if isinstance(name, str) else None
            data = request.get("data") if isinstance(request, dict) else None
            if member is not None and member.state == CONNECTED and isinstance(data, dict):
                member.obey(rpc_command(str(data.get("id", "")), data, GATEWAY_RPC, device=name or ""))
        if message.qos and session is not None:
            session.write(codec.receipt(message), self.fleet.loop.time())

    def on_lost(self, reason: str, detail: str) -> None:
        self.session = None
        for member in list(self.members.values()):
            if member.state == CONNECTED:
                member.on_lost(reason, detail)

    def on_writable(self) -> None:
        for member in self.members.values():
            if member.blocked:
                self.fleet.ready(member)


class GatewayLink:
    """A fleet device's link through its gateway's connection."""

    __slots__ = ("gateway", "version")

    #: (Members write their samples as PUBLISH packets on the gateway's connection themselves.)
    send = None

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.version = gateway.options.version

    async def open(self, device: Device) -> Session:
        """The gateway's connection (opened by the first member that needs it); the device is
        announced on it."""
        session = await self.gateway.ready()
        self.gateway.announce(device, GATEWAY_CONNECT)
        return session

    async def opened(self, device: Device, connection: Connection) -> None:
        """The gateway subscribed to the RPC of all its devices already."""

    def leave(self, device: Device, connection: Connection) -> None:
        """The server hears the device disconnect (the connection stays, for the others)."""
        if self.gateway.session is connection:
            self.gateway.leave(device)

    def cut(self, device: Device, reason: str, now: float) -> None:
        """A storm cuts the gateway's connection: every member of it is dropped."""
        self.gateway.abort(reason)

    def stopped(self, device: Device) -> None:
        """The device leaves the gateway's members."""
        self.gateway.members.pop(device.info.device_id, None)
