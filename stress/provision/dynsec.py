"""Mosquitto's dynamic security plugin, driven over MQTT as the broker's administrator.

Commands are JSON objects published to ``$CONTROL/dynamic-security/v1`` in batches; the
plugin answers each batch on ``.../response`` with one response per command, in order,
carrying the ``correlationData`` given, and an ``error`` string when the command failed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
from typing import Any

from stress.errors import StressError
from stress.mqtt import codec
from stress.mqtt.codec import ConnectOptions
from stress.mqtt.reasons import AUTH_REASONS
from stress.mqtt.session import ConnectError, Session, open_session

CONTROL = "$CONTROL/dynamic-security/v1"
RESPONSE = f"{CONTROL}/response"
#: Time allowed per command of a batch, on top of the timeout.
PER_COMMAND_S = 0.25

Command = dict[str, Any]
Response = dict[str, Any]


class ControlError(StressError):
    """The plugin could not be reached or did not answer; the message is one line."""


class DynamicSecurity:
    """One administrator session: ``await plugin.send([...])`` returns the responses in order."""

    def __init__(self, session: Session, timeout: float) -> None:
        self.session = session
        self.timeout = timeout
        self._waiting: dict[str, asyncio.Future[Response]] = {}
        self._ids = itertools.count(1)
        self._topic = codec.TopicCode(CONTROL, session.version)

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
    ) -> DynamicSecurity:
        """Log in as the administrator and subscribe to the plugin's responses."""
        options = ConnectOptions(client_id=f"stress-admin-{id(cls):x}", username=username, password=password)
        handler = _Responses()
        try:
            session = await open_session(
                host, port, options, handler, tls=tls, server_hostname=host, timeout=timeout
            )
        except ConnectError as exc:
            hint = " (check MQTT_ADMIN_USER and MQTT_ADMIN_PASSWORD)" if exc.reason in AUTH_REASONS else ""
            raise ControlError(
                f"cannot log in to the broker at {host}:{port} as {username!r}: {exc.detail}{hint}"
            ) from None
        plugin = cls(session, timeout)
        handler.plugin = plugin
        try:
            granted = await session.subscribe([(RESPONSE, 1)], timeout=timeout)
        except ConnectError as exc:
            session.abort()
            raise ControlError(f"the broker did not answer a subscription: {exc.detail}") from None
        if granted[0] >= 0x80:
            session.close()
            raise ControlError(
                f"{username!r} may not use the dynamic security plugin (is it the broker's admin account?)"
            )
        return plugin

    async def send(self, commands: list[Command]) -> list[Response]:
        """Run ``commands`` as one batch; one response per command, in order."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Response]] = []
        tagged = []
        for command in commands:
            tag = f"stress-{next(self._ids)}"
            future: asyncio.Future[Response] = loop.create_future()
            self._waiting[tag] = future
            futures.append(future)
            tagged.append({**command, "correlationData": tag})
        if not self.session.connected or self.session.transport is None:
            raise ControlError("the broker closed the administrator's connection")
        payload = json.dumps({"commands": tagged}).encode()
        self.session.write(self._topic.publish(payload), loop.time())
        # The plugin rewrites its whole file after each change, so a batch takes longer the
        # more accounts the broker has: each command is given a little time of its own
        allowed = self.timeout + PER_COMMAND_S * len(commands)
        try:
            async with asyncio.timeout(allowed):
                return list(await asyncio.gather(*futures))
        except TimeoutError:
            raise ControlError(
                f"no answer from the dynamic security plugin within {allowed:g} s "
                "(is the broker up? is it very busy? try a smaller --batch)"
            ) from None
        finally:
            for command in tagged:
                self._waiting.pop(command["correlationData"], None)

    def answered(self, response: Response) -> None:
        """One response arrived."""
        future = self._waiting.get(str(response.get("correlationData")))
        if future is not None and not future.done():
            future.set_result(response)

    def lost(self, detail: str) -> None:
        """The connection dropped: every waiting command fails."""
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(
                    ControlError(f"the broker closed the administrator's connection: {detail}")
                )

    def close(self) -> None:
        """Disconnect."""
        self.session.close()


class _Responses:
    """The session handler: hands each response of the plugin to it."""

    plugin: DynamicSecurity | None = None

    def on_message(self, message: codec.Publish) -> None:
        if message.qos and self.plugin is not None:
            self.plugin.session.ack(message.packet_id, message.qos)
        if self.plugin is None or message.topic != RESPONSE:
            return
        try:
            responses = json.loads(message.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            return  # not a response of the plugin's form: nothing waits on it
        for response in responses if isinstance(responses, list) else []:
            if isinstance(response, dict):
                self.plugin.answered(response)

    def on_puback(self, packet_id: int, reason: int) -> None:
        """Commands go out at QoS 0: the response is the acknowledgement."""

    def on_pubcomp(self, packet_id: int, reason: int, packet: str) -> None:
        """Commands go out at QoS 0: the response is the acknowledgement."""

    def on_lost(self, reason: str, detail: str) -> None:
        if self.plugin is not None:
            self.plugin.lost(f"{reason}: {detail}")

    def on_writable(self) -> None:
        """Nothing is queued here."""
