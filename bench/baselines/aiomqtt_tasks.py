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
from collections import Counter
from importlib.metadata import version

import aiomqtt
from contract import PAYLOAD, Options, Report, cap_devices, log, reason_of


class Fleet:
    """The devices' shared state: who has connected, when publishing starts and ends, the counts."""

    def __init__(self, options: Options, devices: int) -> None:
        self.options = options
        self.devices = devices
        self.connected = 0
        self.failed = 0
        self.all_settled = asyncio.Event()
        self.go = asyncio.Event()
        self.deadline = 0.0
        self.sent = 0
        self.errors: Counter[str] = Counter()

    def settle(self, *, ok: bool) -> None:
        """One device is connected (``ok``) or gave up."""
        if ok:
            self.connected += 1
        else:
            self.failed += 1
        if self.connected + self.failed >= self.devices:
            self.all_settled.set()

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
        except aiomqtt.MqttError as exc:
            self.errors[("publish: " if settled else "connect: ") + reason_of(exc)] += 1
            if not settled:
                self.settle(ok=False)


async def run(options: Options, devices: int) -> Report:
    """Connect the fleet, publish for the duration, return the report."""
    fleet = Fleet(options, devices)
    report = Report(f"aiomqtt {version('aiomqtt')}", options.qos, options.devices, devices)
    loop = asyncio.get_running_loop()
    began = loop.time()
    tasks = [asyncio.create_task(fleet.device(index)) for index in range(devices)]
    try:
        await asyncio.wait_for(fleet.all_settled.wait(), options.connect_timeout)
    except TimeoutError:
        log(f"connect timeout: {fleet.connected} connected, {fleet.failed} failed of {devices}")
    report.connect_s = round(loop.time() - began, 3)
    report.connected = fleet.connected
    report.connect_failures = devices - fleet.connected
    log(f"{fleet.connected} devices connected in {report.connect_s:.1f}s; publishing")
    fleet.deadline = loop.time() + options.duration
    fleet.go.set()
    # Each device stops at the deadline; a reply it still waits for is given a few seconds.
    _done, late = await asyncio.wait(tasks, timeout=options.duration + 10)
    for task in late:
        task.cancel()
    report.publish_s = options.duration
    report.sent = report.confirmed = fleet.sent  # publish() returned: written (QoS 0) or acked (QoS 1)
    report.errors = fleet.errors
    if late:
        report.errors["still busy at the end"] += len(late)
    return report


def main() -> None:
    """Run the fleet and print its report."""
    options = Options.parse(__doc__ or "")
    devices = cap_devices(options.devices, 1, "one socket per device, within the open-file limit")
    try:
        import uvloop  # noqa: PLC0415 - optional

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(run(options, devices)).emit()


if __name__ == "__main__":
    main()
