"""Alarm latency: from a reading over a threshold to the alarm in the portal, beside the reading itself.

One run, on this machine:

1. a lab instance (its own, on free ports, or a running one with ``--env-file``), with the shipped
   rules (temperature above 30 raises a major ``high-temperature`` alarm, below 29 clears it);
2. ``--samples`` times, in a room of its own, the demo device publishes a temperature of 31 and,
   once the alarm is in the portal, 28; for each reading the run times, from the publish:

   * **value**, the baseline: the reading itself in ``GET /api/latest`` (broker, portal, database:
     the path every value takes, without the rules);
   * **reading through the broker**: the reading itself, seen by an admin subscriber (the floor);
   * **alarm on the broker**: the alarm message on ``alarms/<room>/<device>/high-temperature``
     (broker, Node-RED, broker), seen by an admin subscriber;
   * **alarm in the portal**: the alarm in that state in ``GET /api/alarms`` (the rules, then the
     portal storing it).

The API is polled by one thread per endpoint, every ``--poll-ms``; that is the resolution of the
two portal columns. The ratio is alarm in the portal over value, by median: what the rules hop
adds to what a reading already costs.

    .venv/bin/python bench/alarm_latency.py --help

It prints figures; it passes or fails nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlab import lab_instance  # noqa: E402 - bench/ is on sys.path when this runs as a script
from live_latency import portal_cookie  # noqa: E402

from labctl.config import LabConfig  # noqa: E402

ALARM = "high-temperature"
#: The shipped rule's raise level is 30 and its clear level 29 (nodered/rules.json).
RAISE_VALUE = 31.0
CLEAR_VALUE = 28.0
#: A reading not seen within this long counts as never seen.
GIVE_UP_S = 10.0
#: The issue's bound: an alarm is in the portal within this many seconds.
BOUND_S = 2.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--env-file", type=Path, help="measure the running lab of this .env (default: start one)")
    add("--samples", type=int, default=30, help="alarms raised and cleared (default 30)")
    add("--poll-ms", type=float, default=5, help="API polling period per endpoint (default 5 ms)")
    args = parser.parse_args(argv)
    if args.samples < 1 or args.poll_ms <= 0:
        parser.error("--samples must be at least 1 and --poll-ms above 0")
    return args


class BrokerWatcher:
    """An admin subscriber to the readings and ``alarms/#``: when each reading, and each (room,
    state) alarm, first came through the broker."""

    def __init__(self, config: LabConfig) -> None:
        env = config.env
        self.root = env["TOPIC_ROOT"]
        self.seen: dict[tuple[str, str], float] = {}
        self.readings: dict[tuple[str, float], float] = {}
        client_id = f"alarm-bench-{uuid.uuid4().hex[:8]}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.username_pw_set(env["MQTT_ADMIN_USER"], env["MQTT_ADMIN_PASSWORD"])
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", config.port("MQTT_PORT"))
        self.client.subscribe([("alarms/#", 1), (f"{self.root}/#", 1)])
        self.client.loop_start()

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        arrived = time.time()
        parts = message.topic.split("/")
        try:
            body = json.loads(message.payload)
            if parts[0] == self.root:
                self.readings.setdefault((parts[1], float(body["value"])), arrived)
            else:
                self.seen.setdefault((parts[1], str(body["state"])), arrived)
        except (ValueError, KeyError, TypeError, IndexError):
            return

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def poll_until(found: Callable[[], bool], poll_s: float) -> float | None:
    """The time at which ``found()`` first held, or None after GIVE_UP_S."""
    deadline = time.time() + GIVE_UP_S
    while time.time() < deadline:
        if found():
            return time.time()
        time.sleep(poll_s)
    return None


class Portal:
    """The two API questions, each on its own signed-in session (they are asked from two threads)."""

    def __init__(self, url: str, cookie: str, device: str) -> None:
        self.url, self.device = url, device
        self.values_api, self.alarms_api = requests.Session(), requests.Session()
        for session in (self.values_api, self.alarms_api):
            session.headers["Cookie"] = cookie

    def value_stored(self, room: str, value: float) -> bool:
        params = {"room": room, "device": self.device}
        answer = self.values_api.get(f"{self.url}/api/latest", params=params, timeout=5)
        return any(v["value"] == value for v in answer.json()["values"])

    def alarm_stored(self, room: str, state: str) -> bool:
        answer = self.alarms_api.get(f"{self.url}/api/alarms", params={"state": "all"}, timeout=5)
        return any(
            (a["room"], a["device"], a["type"], a["state"]) == (room, self.device, ALARM, state)
            for a in answer.json()["alarms"]
        )


def time_reading(
    portal: Portal,
    publish: Callable[[str, float], None],
    room: str,
    value: float,
    *,
    state: str,
    poll_s: float,
) -> tuple[float, dict[str, float | None]]:
    """Publish ``value`` in ``room``; when the value and the alarm in ``state`` were in the portal."""
    seen: dict[str, float | None] = {}

    def watch(key: str, found: Callable[[], bool]) -> threading.Thread:
        return threading.Thread(target=lambda: seen.__setitem__(key, poll_until(found, poll_s)))

    pollers = [
        watch("value", lambda: portal.value_stored(room, value)),
        watch("portal", lambda: portal.alarm_stored(room, state)),
    ]
    sent = time.time()
    publish(room, value)
    for poller in pollers:
        poller.start()
    for poller in pollers:
        poller.join()
    return sent, seen


def measure(args: argparse.Namespace, config: LabConfig) -> dict[str, list[float | None]]:
    env = config.env
    url = f"http://127.0.0.1:{config.port('PORTAL_PORT')}"
    device = env["LAB_DEVICE_ID"]
    portal = Portal(url, portal_cookie(url, env["PORTAL_ADMIN_USER"], env["PORTAL_ADMIN_PASSWORD"]), device)
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{device}-{uuid.uuid4().hex[:6]}")
    publisher.username_pw_set(device, env["LAB_DEVICE_PASSWORD"])
    publisher.connect("127.0.0.1", config.port("MQTT_PORT"))
    publisher.loop_start()

    def publish(room: str, value: float) -> None:
        payload = json.dumps({"value": value, "ts": round(time.time() * 1000)})
        publisher.publish(f"{env['TOPIC_ROOT']}/{room}/{device}/temperature", payload, qos=1)

    watcher = BrokerWatcher(config)
    run = uuid.uuid4().hex[:6]
    poll_s = args.poll_ms / 1000
    results: dict[str, list[float | None]] = {key: [] for key in ("value", "reading", "broker", "portal")}
    try:
        for i in range(args.samples):
            room = f"alarm-bench-{run}-{i:03d}"
            for value, state in ((RAISE_VALUE, "active"), (CLEAR_VALUE, "cleared")):
                sent, seen = time_reading(portal, publish, room, value, state=state, poll_s=poll_s)
                seen["reading"] = watcher.readings.get((room, value))
                seen["broker"] = watcher.seen.get((room, state))
                for key, at in seen.items():
                    results[key].append(None if at is None else at - sent)
            print(f"\r  {i + 1}/{args.samples} alarms raised and cleared", end="", flush=True)
        print()
    finally:
        watcher.close()
        publisher.disconnect()
        publisher.loop_stop()
    return results


def percentile(xs: list[float], share: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def print_results(results: dict[str, list[float | None]]) -> None:
    labels = {
        "value": "value in /api/latest (baseline)",
        "reading": "reading through the broker",
        "broker": "alarm on the broker",
        "portal": "alarm in /api/alarms",
    }
    print(f"{'from the reading to the':<34} {'p50':>7} {'p90':>7} {'max':>7}   seen")
    medians: dict[str, float] = {}
    for key, label in labels.items():
        seen_ms = [x * 1000 for x in results[key] if x is not None]
        total = len(results[key])
        if not seen_ms:
            print(f"{label:<34} {'-':>7} {'-':>7} {'-':>7}   0/{total}")
            continue
        medians[key] = percentile(seen_ms, 0.5)
        p50, p90, top = medians[key], percentile(seen_ms, 0.9), max(seen_ms)
        print(f"{label:<34} {p50:>4.0f} ms {p90:>4.0f} ms {top:>4.0f} ms   {len(seen_ms)}/{total}")
    portal = [x for x in results["portal"] if x is not None]
    within = sum(1 for x in portal if x <= BOUND_S)
    print(f"alarms in the portal within {BOUND_S:.0f} s: {within}/{len(results['portal'])}")
    if "value" in medians and "portal" in medians and medians["value"] > 0:
        print(f"ratio alarm / value (p50): {medians['portal'] / medians['value']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with lab_instance(args.env_file, "alarm-latency-") as (config, _):
        print_results(measure(args, config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
