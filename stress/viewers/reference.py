"""The reference: an MQTT subscriber on the broker that records each attribute's final value, and
the check of a viewer's last values against it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from stress.mqtt import codec
from stress.mqtt.codec import ConnectOptions
from stress.mqtt.session import ConnectError, Session, open_session
from stress.viewers import ViewersError
from stress.viewers.scopes import topic_filters
from wire.payloads import parse_payload
from wire.rejections import Rejection
from wire.scopes import Scope
from wire.timestamps import epoch_ms

#: ``(room, device, attr)``
Key = tuple[str, str, str]
#: What a viewer last saw of an attribute: ``(ts in ms, value)``.
Seen = tuple[int, Any]
#: Topic filters per SUBSCRIBE packet of the reference.
FILTERS_PER_PACKET = 100


@dataclass(frozen=True, slots=True)
class Final:
    """The last value of an attribute that the reference saw.

    ``ts`` is the device's own timestamp when the payload carried one (``stamped``), else the
    reference's arrival time, which is close to the portal's own stamp but not equal to it.
    """

    value: float | str
    ts: int
    stamped: bool


def read_value(payload: bytes) -> tuple[float | str, int | None] | None:
    """The value and device timestamp (ms) of a payload, as the portal reads it (the one grammar,
    :mod:`wire.payloads`); None when the portal refuses it."""
    read = parse_payload(payload)
    if isinstance(read, Rejection):
        return None
    return read.value, None if read.ts is None else epoch_ms(read.ts)


def is_missed(final: Final, seen: Seen | None) -> bool:
    """True when a viewer's last value ``seen`` of an attribute is not its ``final`` value (or newer)."""
    if seen is None:
        return True
    seen_ts, seen_value = seen
    if seen_value == final.value and (seen_ts >= final.ts or not final.stamped):
        return False
    # Another value: fine only when it is newer (published after the reference stopped).
    return seen_ts <= final.ts


def missed_keys(finals: Iterable[tuple[Key, Final]], last: Mapping[Key, Seen]) -> list[Key]:
    """The attributes of ``finals`` whose final value a viewer with ``last`` values lacks."""
    return [key for key, final in finals if is_missed(final, last.get(key))]


# ---------------------------------------------------------------------------- the reference


@dataclass(frozen=True)
class BrokerAccount:
    """Where the reference subscriber reads the lab's telemetry."""

    host: str
    port: int
    username: str
    password: str
    root: str = "office"


class Reference:
    """An MQTT subscriber recording the final value of every attribute in the viewers' scopes."""

    def __init__(self, account: BrokerAccount, scopes: Iterable[Scope]) -> None:
        self.account = account
        self.filters = topic_filters(scopes, account.root)
        self.finals: dict[Key, Final] = {}
        self.messages = 0
        self.error: str | None = None
        self._session: Session | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._stopped = False

    async def start(self, timeout: float) -> None:
        """Connect and subscribe.

        Raises:
            ViewersError: the broker refused the account or the subscription, or did not answer.
        """
        account = self.account
        options = ConnectOptions(
            client_id=f"stress-viewers-{uuid.uuid4().hex[:8]}",
            username=account.username,
            password=account.password,
            keepalive=30,
        )
        where = f"the broker at {account.host}:{account.port}"
        try:
            self._session = await open_session(account.host, account.port, options, self, timeout=timeout)
            for start in range(0, len(self.filters), FILTERS_PER_PACKET):
                chunk = [(each, 1) for each in self.filters[start : start + FILTERS_PER_PACKET]]
                granted = await self._session.subscribe(chunk, timeout=timeout)
                if any(code >= 0x80 for code in granted):
                    raise ViewersError(
                        f"{where} refused {account.username!r} a subscription to {chunk[0][0]} "
                        "(the reference needs the lab's fleet account)"
                    )
        except ConnectError as exc:
            raise ViewersError(f"the reference subscriber cannot use {where}: {exc.detail}") from None
        self._pinger = asyncio.create_task(self._keepalive())

    def stop(self) -> None:
        """Record nothing more, and disconnect."""
        self._stopped = True
        if self._pinger is not None:
            self._pinger.cancel()
        if self._session is not None:
            self._session.close()
            self._session = None

    async def _keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        while self._session is not None:
            self._session.keepalive_due(loop.time())
            await asyncio.sleep(1.0)

    # SessionHandler

    def on_message(self, message: codec.Publish) -> None:
        """Keep the value if it is the attribute's newest (by timestamp, as the portal does)."""
        if message.qos and self._session is not None:
            self._session.ack(message.packet_id, message.qos)
        if self._stopped or message.retain:  # retained: published before the reference began
            return
        levels = message.topic.split("/")
        if len(levels) != 4 or levels[0] != self.account.root:
            return
        read = read_value(message.payload)
        if read is None:
            return
        value, stamp = read
        key = (levels[1], levels[2], levels[3])
        final = Final(value, stamp if stamp is not None else round(time.time() * 1000), stamp is not None)
        current = self.finals.get(key)
        if current is None or final.ts >= current.ts or not final.stamped:
            self.finals[key] = final
        self.messages += 1

    def on_puback(self, packet_id: int, reason: int) -> None:
        """The reference publishes nothing."""

    def on_pubcomp(self, packet_id: int, reason: int, packet: str) -> None:
        """The reference publishes nothing."""

    def on_lost(self, reason: str, detail: str) -> None:
        """Remembered: the comparison is then incomplete."""
        self.error = f"{reason}: {detail}"
        self._session = None

    def on_writable(self) -> None:
        """Nothing is queued here."""
