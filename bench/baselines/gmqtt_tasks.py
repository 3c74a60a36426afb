"""Baseline simulator: gmqtt, a task per device, on uvloop when it is installed.

Each device is one task with its own ``gmqtt.Client`` (MQTT 3.1.1, clean session).
``client.publish`` is a plain call that writes to the transport, so the task yields to the event
loop after each message (QoS 0) to let the other devices and the socket work.

gmqtt has no flow control for QoS 1: ``publish`` never waits and keeps each message until its
PUBACK, so a device publishing faster than acknowledgements return (a loop that does not yield,
say) raises ``OverflowError`` at 65,534 outstanding messages. Here each device passes gmqtt a
store (its ``persistent_storage`` hook) that is also a window of 20 slots: a publish takes a
slot, the PUBACK that removes the message from the store frees it, and a device whose 20 slots
are taken waits, which is also when it yields to the others. At QoS 2 gmqtt keeps the message
(then its PUBREL) in the store until the PUBCOMP, so a slot is held for the whole exchange.

    .venv/bin/python bench/baselines/gmqtt_tasks.py --port 1883 --devices 1000 --duration 20 --qos 1
"""

from __future__ import annotations

import asyncio
import logging
import os
from importlib.metadata import version

import gmqtt
from contract import DRAIN_S, PAYLOAD, WINDOW, Options, Report, TaskFleet, cap_devices, reason_of, run_loop
from gmqtt.mqtt.constants import MQTTv311
from gmqtt.storage import PersistentStorage

FILES_PER_DEVICE = 1


class InflightWindow(PersistentStorage):  # type: ignore[misc] - gmqtt is untyped
    """gmqtt's store of unacknowledged messages, with a slot per message it holds."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.slots = asyncio.Semaphore(size)
        self.held: set[int] = set()
        self.acked = 0

    def push_message(self, mid: int, raw_package: bytes) -> None:
        """gmqtt stores a QoS 1 message it just sent."""
        self.held.add(mid)
        super().push_message(mid, raw_package)

    def remove_message_by_mid(self, mid: int) -> None:
        """gmqtt drops a message the broker acknowledged (PUBACK, or PUBCOMP): its slot is free again."""
        if mid in self.held:
            self.held.discard(mid)
            self.acked += 1
            self.slots.release()
        super().remove_message_by_mid(mid)


class Fleet(TaskFleet):
    """gmqtt devices, each with its in-flight window."""

    grace = DRAIN_S + 10

    async def device(self, index: int) -> None:
        """One device: connect, wait for the start, publish until the deadline, disconnect."""
        options = self.options
        topic = options.topic(index)
        window = InflightWindow(WINDOW)
        client = gmqtt.Client(f"gmqtt-{os.getpid()}-{options.device(index)}", persistent_storage=window)
        try:
            await asyncio.wait_for(
                client.connect(options.host, options.port, keepalive=60, version=MQTTv311),
                options.connect_timeout,
            )
        except (OSError, TimeoutError, gmqtt.MQTTConnectError) as exc:
            self.errors["connect: " + reason_of(exc)] += 1
            self.settle(ok=False)
            return
        self.settle(ok=True)
        sent = 0
        try:
            await self.go.wait()
            sent = await self.publish(client, topic, window)
            if options.qos:
                await asyncio.wait_for(window.wait_empty(), DRAIN_S)
        except (OSError, TimeoutError, OverflowError) as exc:
            self.errors["publish: " + reason_of(exc)] += 1
        finally:
            self.sent += sent
            # Written to the transport (QoS 0), or acknowledged by the broker (QoS 1 and 2).
            self.confirmed += window.acked if options.qos else sent
            await client.disconnect()

    async def publish(self, client: gmqtt.Client, topic: str, window: InflightWindow) -> int:
        """Publish until the deadline: flat out, or one message per interval; returns how many."""
        options, qos = self.options, self.options.qos
        sent = 0
        loop = asyncio.get_running_loop()
        due = loop.time() + options.first_due()
        while (now := loop.time()) < self.deadline:
            if options.interval:
                if now < due:
                    await asyncio.sleep(min(due, self.deadline) - now)
                    continue
                due += options.interval
            if qos:
                await window.slots.acquire()  # waits for a PUBACK (PUBCOMP) once 20 are outstanding
            else:
                await asyncio.sleep(0)
            client.publish(topic, PAYLOAD, qos=qos)
            sent += 1
        return sent


def main() -> None:
    """Run the fleet and print its report."""
    options = Options.parse(__doc__ or "")
    devices = cap_devices(
        options.devices, FILES_PER_DEVICE, "one socket per device, within the open-file limit"
    )
    logging.getLogger("gmqtt").setLevel(logging.ERROR)
    report = Report(f"gmqtt {version('gmqtt')}", options.qos, options.devices, devices)
    run_loop(Fleet(options, devices).run(report)).emit()


if __name__ == "__main__":
    main()
