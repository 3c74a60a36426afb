"""Fuzzing ingest through the real broker: hostile messages interleaved with valid ones.

A few thousand messages, in a shuffled (seeded) order: random bytes, bad UTF-8, oversize payloads,
NaN and infinities, JSON nested thousands deep, topics of the wrong depth or with empty levels,
look-alikes of the wildcard characters, empty payloads... Afterwards every valid message is stored,
the portal is still up and ready, and ``/metrics`` counts the rejections by reason.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningLab
from tests.mqtt_helpers import connect
from tests.web.portal_testing import signed_in_session
from wire.payloads import Payload, parse_payload

pytestmark = pytest.mark.integration

SEED = 20250101
VALID = 1500
RANDOM = 600

#: Hostile payloads for a good topic, with the reason each must be rejected for.
HOSTILE_PAYLOADS: list[tuple[bytes, str]] = [
    (b"\xff\xfe\xfd", "bad_utf8"),
    (b"caf\xc3", "bad_utf8"),
    (b"\xed\xa0\x80", "bad_utf8"),  # an encoded surrogate
    (b"1" * 70_000, "oversize"),
    (b"NaN", "not_finite"),
    (b"-Infinity", "not_finite"),
    (b'{"value": NaN}', "not_finite"),
    (b"1e999", "out_of_range"),
    (b"[" * 30_000 + b"]" * 30_000, "nested"),
    (b'{"value": {"value": 1}}', "nested"),
    (b"[1, 2]", "nested"),
    (b"", "empty"),
    (b" \t\r\n", "empty"),
    (b"null", "null"),
    (b'{"ts": 1}', "missing_value"),
    (b'{"value": 1, "units": "C"}', "unknown_key"),
    (b'{"value": 1, "unit": ""}', "bad_unit"),
    (b'{"value": 1, "value": 2}', "duplicate_key"),
    (b'{"value": 1, "ts": -5}', "bad_ts"),
    (b'"a\\u0000b"', "bad_string"),
    (b"\x00\x01\x02", "binary"),
    (b"two words", "malformed"),
    (b'{"value": 1', "malformed"),
]


def hostile_topics(room: str) -> list[tuple[str, str]]:
    """Topics the portal must refuse whatever the payload (the broker accepts them all)."""
    return [
        (f"office/{room}", "topic_depth"),
        (f"office/{room}/dev", "topic_depth"),
        (f"office/{room}/dev/attr/extra", "topic_depth"),
        (f"office/{room}//attr", "topic_level"),
        (f"office/{room}/dev/", "topic_level"),
    ]


def metrics(lab: RunningLab) -> Counter[str]:
    """Rejections by reason, as the portal's /metrics reports them."""
    session = signed_in_session(
        lab.portal_url, lab.env["PORTAL_ADMIN_USER"], lab.env["PORTAL_ADMIN_PASSWORD"]
    )
    response = session.get(f"{lab.portal_url}/metrics", timeout=10)
    assert response.status_code == 200, response.text[:200]
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(response.text):
        if family.name == "portal_ingest_rejected":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["reason"]] += int(sample.value)
    return counts


#: Device names that look like wildcards or separators but are ordinary UTF-8 (all valid):
#: fullwidth letters and plus, fullwidth number sign, a URL-escaped '#', a heavy plus sign.
LOOK_ALIKES = ["dev", "\uff44\uff45\uff56\uff0b", "dev\uff031", "d\u00e9v%23", "dev\u2795plus"]
VALID_FORMS = [b"%d", b"%d.0", b" %d\n", b'{"value": %d}', b'{"value": %d, "ts": 1700000000000}', b"+%de0"]


class Plan:
    """The shuffled messages and what must come of them."""

    def __init__(self, room: str) -> None:
        rng = random.Random(SEED)
        self.messages: list[tuple[str, bytes]] = []
        self.valid: dict[str, set[int]] = {device: set() for device in LOOK_ALIKES}
        self.rejected: Counter[str] = Counter()
        for number in range(VALID):  # numbered values, in every accepted form
            device = LOOK_ALIKES[number % len(LOOK_ALIKES)]
            self.valid[device].add(number)
            self.messages.append(
                (f"office/{room}/{device}/n", VALID_FORMS[number % len(VALID_FORMS)] % number)
            )
        for payload, reason in HOSTILE_PAYLOADS:
            self.messages += [(f"office/{room}/dev/bad", payload)] * 10
            self.rejected[reason] += 10
        for topic, reason in hostile_topics(room):
            self.messages += [(topic, b"1")] * 10
            self.rejected[reason] += 10
        # Random bytes: whatever parse_payload (unit-tested on its own) says of each, ingest must do.
        self.random_valid = 0
        for _ in range(RANDOM):
            payload = rng.randbytes(rng.randint(1, 64))
            self.messages.append((f"office/{room}/rnd/x", payload))
            self.random_valid += isinstance(parse_payload(payload), Payload)
        rng.shuffle(self.messages)


def stored(lab: RunningLab, room: str) -> tuple[dict[str, set[int]], int, int]:
    """(numbers stored per device, rows of random payloads, rows of hostile payloads)."""
    with lab.db() as db:
        rows = db.execute("SELECT device, attr, value_num FROM readings WHERE room = %s", (room,)).fetchall()
    numbers: dict[str, set[int]] = {device: set() for device in LOOK_ALIKES}
    attrs: Counter[object] = Counter()
    for device, attr, value in rows:
        attrs[attr] += 1
        if attr == "n":
            numbers[str(device)].add(int(value))  # type: ignore[call-overload]
    return numbers, attrs["x"], attrs["bad"]


def publish_all(lab: RunningLab, messages: list[tuple[str, bytes]]) -> None:
    """Publish at QoS 1 as the broker's admin and wait for every acknowledgement."""
    client = lab.mqtt_client(lab.env["MQTT_ADMIN_USER"], lab.env["MQTT_ADMIN_PASSWORD"])
    client.max_inflight_messages_set(200)
    assert not connect(client, lab.port("MQTT_PORT")).is_failure
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def test_hostile_messages_never_stop_ingest(lab: RunningLab, unique_room: str) -> None:
    plan = Plan(unique_room)
    before = metrics(lab)
    pid = lab.lab.pid(lab.lab.service("web"))

    publish_all(lab, plan.messages)

    deadline = time.monotonic() + 60
    numbers, random_rows, bad_rows = stored(lab, unique_room)
    while (numbers != plan.valid or random_rows < plan.random_valid) and time.monotonic() < deadline:
        time.sleep(0.25)
        numbers, random_rows, bad_rows = stored(lab, unique_room)
    missing = {device: len(plan.valid[device] - numbers[device]) for device in LOOK_ALIKES}
    assert numbers == plan.valid, f"valid messages not stored: {missing}"
    assert random_rows == plan.random_valid
    assert bad_rows == 0

    assert lab.lab.pid(lab.lab.service("web")) == pid, "the portal restarted"
    assert requests.get(f"{lab.portal_url}/readyz", timeout=10).status_code == 200
    after = metrics(lab)
    for reason, count in plan.rejected.items():
        assert after[reason] - before[reason] >= count, reason
