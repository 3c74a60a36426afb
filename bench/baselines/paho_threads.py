"""Baseline simulator: paho-mqtt 2.x, a thread per device.

Each device is one ``mqtt.Client`` (``CallbackAPIVersion.VERSION2``, MQTT 3.1.1, clean session)
with the library's network thread (``loop_start``) and a thread of its own that connects, waits
for the CONNACK, then publishes. Publishing keeps at most 20 messages ahead of their confirmation
(paho's default in-flight window): past that it waits for the oldest with ``wait_for_publish``,
which returns once the message is written (QoS 0) or acknowledged (QoS 1), so a device never
queues without bound.

paho's network thread waits with ``select()``, which fails on a file descriptor numbered 1024 or
more (the client then loses its connection and retries, silently), and each client holds three:
its connection and a socket pair that wakes the thread. So one process runs about 330 devices at
most, whatever its open-file limit (paho.mqtt.python issues 183, 238, 819); past that this
simulator caps the fleet and says so in a ``cap:`` line.

    .venv/bin/python bench/baselines/paho_threads.py --port 1883 --devices 1000 --duration 20 --qos 1
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, deque

import paho.mqtt
import paho.mqtt.client as mqtt
from contract import DRAIN_S, PAYLOAD, WINDOW, Options, Report, cap_devices, log, reason_of
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

FILES_PER_DEVICE = 3
#: FD_SETSIZE: select() fails on a descriptor numbered this or higher.
SELECT_LIMIT = 1024


class Gate:
    """Counts devices done connecting (connected or given up); wakes whoever waits for all."""

    def __init__(self, devices: int) -> None:
        self.devices = devices
        self.connected = 0
        self.failed = 0
        self._done = threading.Condition()

    def settle(self, *, ok: bool) -> None:
        """One device is connected (``ok``) or gave up."""
        with self._done:
            if ok:
                self.connected += 1
            else:
                self.failed += 1
            self._done.notify_all()

    def wait(self, timeout: float) -> bool:
        """Wait until every device settled; False on timeout."""
        with self._done:
            return self._done.wait_for(lambda: self.connected + self.failed >= self.devices, timeout)


class Start:
    """The start of the publishing phase, shared by all device threads."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.deadline = 0.0

    def begin(self, duration: float) -> None:
        """Start publishing now, for ``duration`` seconds."""
        self.deadline = time.monotonic() + duration
        self.event.set()


class Device:
    """One simulated device: its client, its thread, its counters (written by its threads only)."""

    def __init__(self, index: int, options: Options, gate: Gate, start: Start) -> None:
        self.options = options
        self.name = options.device(index)
        self.topic = options.topic(index)
        self.gate = gate
        self.start = start
        self.connack = threading.Event()
        self.accepted = False
        self.closing = False
        self.sent = 0
        self.confirmed = 0
        self.errors: Counter[str] = Counter()

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        _properties: object,
    ) -> None:
        self.accepted = not reason_code.is_failure
        if not self.accepted:
            self.errors[f"connack: {reason_code}"] += 1
        self.connack.set()

    def _on_publish(self, *_args: object) -> None:
        self.confirmed += 1

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: object, _flags: object, reason_code: ReasonCode, _p: object
    ) -> None:
        if not self.closing:
            self.errors[f"disconnected: {reason_code}"] += 1

    def run(self) -> None:
        """Connect, wait for the start, publish until the deadline, disconnect."""
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"paho-{os.getpid()}-{self.name}")
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        try:
            client.connect(self.options.host, self.options.port, keepalive=60)
        except OSError as exc:
            self.errors[reason_of(exc)] += 1
            self.gate.settle(ok=False)
            return
        client.loop_start()
        try:
            if not self.connack.wait(self.options.connect_timeout):
                self.errors["no CONNACK in time"] += 1
            if not self.accepted:
                self.gate.settle(ok=False)
                return
            self.gate.settle(ok=True)
            self.start.event.wait()
            self.publish(client)
        finally:
            self.closing = True
            client.disconnect()
            client.loop_stop()

    def publish(self, client: mqtt.Client) -> None:
        """Publish until the deadline: flat out, or one message per interval."""
        window: deque[mqtt.MQTTMessageInfo] = deque()
        interval, deadline = self.options.interval, self.start.deadline
        due = time.monotonic() + self.options.first_due()
        while (now := time.monotonic()) < deadline:
            if interval:
                if now < due:
                    time.sleep(min(due, deadline) - now)
                    continue
                due += interval
            info = client.publish(self.topic, PAYLOAD, self.options.qos)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self.errors[mqtt.error_string(info.rc)] += 1
                time.sleep(0.01)  # not connected: paho's thread reconnects meanwhile
                continue
            self.sent += 1
            window.append(info)
            if len(window) >= WINDOW:
                window.popleft().wait_for_publish(max(0.0, deadline - time.monotonic()))
        drain_until = time.monotonic() + DRAIN_S
        for info in window:
            info.wait_for_publish(max(0.0, drain_until - time.monotonic()))


def main() -> None:
    """Run the fleet and print its report."""
    options = Options.parse(__doc__ or "")
    devices = cap_devices(
        options.devices,
        FILES_PER_DEVICE,
        "paho-mqtt's network thread waits with select(), which takes only file descriptors below"
        f" {SELECT_LIMIT}, and each device holds {FILES_PER_DEVICE}: its connection and a socket pair",
        highest=SELECT_LIMIT,
    )
    report = Report(f"paho-mqtt {paho.mqtt.__version__}", options.qos, options.devices, devices)
    gate, start = Gate(devices), Start()
    fleet = [Device(index, options, gate, start) for index in range(devices)]
    threads = [threading.Thread(target=device.run, daemon=True) for device in fleet]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    if not gate.wait(max(0.0, began + options.connect_timeout - time.monotonic())):
        log(f"connect timeout: {gate.connected} connected, {gate.failed} failed of {devices}")
    report.connect_s = round(time.monotonic() - began, 3)
    report.connected = gate.connected
    report.connect_failures = devices - gate.connected
    log(f"{gate.connected} devices connected in {report.connect_s:.1f}s; publishing")
    start.begin(options.duration)
    for thread in threads:
        thread.join(max(0.0, start.deadline + DRAIN_S + 10 - time.monotonic()))
    report.publish_s = options.duration
    for device in fleet:
        report.sent += device.sent
        report.confirmed += device.confirmed
        report.errors.update(device.errors)
    report.emit()


if __name__ == "__main__":
    main()
