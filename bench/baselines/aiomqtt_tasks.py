"""Baseline simulator: aiomqtt, a task per device, on uvloop when it is installed.

Each device is one task holding ``async with aiomqtt.Client(...)`` (MQTT 3.1.1, clean session)
and awaiting ``client.publish`` in a loop: aiomqtt returns once the message is written (QoS 0)
or acknowledged (QoS 1), so a device has one message in flight, which is how the library is
meant to be used. All devices connect first; the fleet publishes once every one has answered.

    .venv/bin/python bench/baselines/aiomqtt_tasks.py --port 1883 --devices 1000 --duration 20 --qos 1
"""

from __future__ import annotations

import asyncio
import os
from importlib.metadata import version

import aiomqtt
from contract import PAYLOAD, Options, Report, TaskFleet, cap_devices, reason_of, run_loop


class Fleet(TaskFleet):
    """aiomqtt devices: ``publish`` returns once written (QoS 0) or acknowledged (QoS 1)."""

    async def device(self, index: int) -> None:
        """One device: connect, wait for the start, publish until the deadline."""
        options = self.options
        topic = options.topic(index)
        settled = False
        try:
            async with aiomqtt.Client(
                options.host,
                options.port,
                identifier=f"aiomqtt-{os.getpid()}-{options.device(index)}",
                keepalive=60,
            ) as client:
                self.settle(ok=True)
                settled = True
                await self.go.wait()
                loop = asyncio.get_running_loop()
                due = loop.time() + options.first_due()
                while (now := loop.time()) < self.deadline:
                    if options.interval:
                        if now < due:
                            await asyncio.sleep(min(due, self.deadline) - now)
                            continue
                        due += options.interval
                    await client.publish(topic, PAYLOAD, qos=options.qos)
                    self.sent += 1
                    self.confirmed += 1
        except aiomqtt.MqttError as exc:
            self.errors[("publish: " if settled else "connect: ") + reason_of(exc)] += 1
            if not settled:
                self.settle(ok=False)


def main() -> None:
    """Run the fleet and print its report."""
    options = Options.parse(__doc__ or "")
    devices = cap_devices(options.devices, 1, "one socket per device, within the open-file limit")
    report = Report(f"aiomqtt {version('aiomqtt')}", options.qos, options.devices, devices)
    run_loop(Fleet(options, devices).run(report)).emit()


if __name__ == "__main__":
    main()
