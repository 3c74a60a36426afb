"""The contract between the stress tool and the portal: what one writes, the other reads the same.

The rules live once, in ``wire`` (names, topics, payloads, scopes, time bounds); these tests take
what the stress tool actually produces (its lab target's topics and payloads, its presence, its
device names, its viewers' subscriptions and broker filters) and check that the portal's own
parsing (``web.messages``, ``web.presence``, ``web.api.params``, ``web.alarm_messages``) reads
each one as the stress tool meant it.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from werkzeug.datastructures import MultiDict

from stress.behaviours import BUILTIN, DeviceInfo
from stress.errors import ScenarioError
from stress.payloads import stamp
from stress.scenario import Broker, Scenario, device_name, prefix_problem
from stress.shapes import timeline
from stress.targets.lab import PRESENCE_ATTR as STRESS_PRESENCE_ATTR
from stress.targets.lab import LabTarget
from stress.viewers.reference import read_value
from stress.viewers.scopes import topic_filters
from web.alarm_messages import AlarmMessage, parse_alarm
from web.api.fields import Timestamp
from web.api.params import ParamError
from web.messages import Reading, parse_message
from web.presence import PRESENCE_ATTR, checked
from wire.names import name_problem
from wire.rejections import Rejection
from wire.scopes import Scope
from wire.timestamps import MAX_TS_MS, epoch_ms

ROOT = "office"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def lab_target() -> LabTarget:
    scenario = Scenario(
        target="lab",
        broker=Broker(port=1883),
        stages=timeline("steady", 20, 1.0, 10.0),
        options={"username": "fleet", "password": "secret", "root": ROOT},
    )
    return LabTarget(scenario)


def read(topic: str, payload: bytes) -> Reading:
    reading = parse_message(topic.encode(), payload, NOW, ROOT)
    assert isinstance(reading, Reading), (topic, payload, reading)
    return reading


@pytest.mark.parametrize("behaviour", sorted(BUILTIN))
def test_every_value_the_stress_tool_publishes_is_stored_as_it_was_sent(behaviour: str) -> None:
    target = lab_target()
    cls = BUILTIN[behaviour]
    for index in (0, 7, 19):
        info = DeviceInfo(index, device_name("dev", index, 20), f"room-{index % 10 + 1:02d}")
        topics = target.topics(info, cls.attributes)
        encode = target.encoder(info, cls.attributes)
        device = cls(info, random.Random(index))
        device.start(0.0)
        for step in range(50):
            values = device.next_values(step * 1.0)
            sent_ms = 1_765_108_800_123.25 + step * 1000
            payloads = encode(values, step, sent_ms)
            for topic, payload, value in zip(topics, payloads, values, strict=True):
                reading = read(topic.topic, payload)
                expected = float(value) if isinstance(value, bool | int | float) else value
                assert reading.value == expected, (topic.topic, payload)
                assert reading.ts == datetime.fromtimestamp(float(stamp(sent_ms)) / 1000, UTC)
                assert (reading.topic.room, reading.topic.device) == (info.room, info.device_id)
                # The viewers' reference reads the payload as the portal does
                assert read_value(payload) == (expected, epoch_ms(reading.ts))


@pytest.mark.parametrize("state", ["online", "offline"])
def test_a_stress_devices_presence_is_a_presence_the_portal_keeps(state: str) -> None:
    target = lab_target()
    info = DeviceInfo(3, "dev00004", "room-04")
    presence = target.presence(info)
    assert STRESS_PRESENCE_ATTR == PRESENCE_ATTR
    packet = presence.say(state, 1_765_108_800_000)
    payload = packet[packet.index(b"{") :]  # the PUBLISH's payload: its JSON object
    reading = read(presence.topic.topic, payload)
    assert reading.topic.attr == PRESENCE_ATTR
    assert checked(reading, retained=True) == reading
    assert reading.value == state
    will = presence.will()
    lost = read(will.topic, will.payload)
    assert lost.value == "lost" and isinstance(checked(lost, retained=True), Reading)


@pytest.mark.parametrize(
    ("prefix", "fleet"), [("dev", 10), ("sensor-", 100_000), ("ünïcode ", 5), ("x" * 190, 1_000_000)]
)
def test_names_the_stress_tool_makes_are_names_the_portal_takes(prefix: str, fleet: int) -> None:
    # (an empty prefix is refused on its own: it would name every device to stress deprovision)
    names = [device_name(prefix, index, fleet) for index in (0, fleet // 2, fleet - 1)]
    portal = [name_problem(name) for name in names]
    stress = prefix_problem(prefix, fleet)
    assert (stress is None) == all(problem is None for problem in portal), (stress, portal)


@pytest.mark.parametrize("prefix", ["", "a/b", "x+", "#", " dev", "dev\u200b", "x" * 196])
def test_prefixes_the_portal_would_refuse_are_refused_before_a_run(prefix: str) -> None:
    assert prefix_problem(prefix, 10) is not None
    with pytest.raises(ScenarioError, match="--prefix"):
        Scenario(
            target="lab", broker=Broker(port=1883), stages=timeline("steady", 10, 1.0, 10.0), prefix=prefix
        )


SCOPES = [Scope("site"), Scope("room", "room-01"), Scope("device", "room-02", "dev00002")]
TOPICS = [
    f"{ROOT}/{room}/{device}/temperature"
    for room in ("room-01", "room-02", "room-03")
    for device in ("dev00001", "dev00002")
]


def filter_matches(topic_filter: str, topic: str) -> bool:
    wanted, levels = topic_filter.split("/"), topic.split("/")
    return len(wanted) == len(levels) and all(
        w in ("+", level) for w, level in zip(wanted, levels, strict=True)
    )


@pytest.mark.parametrize("scope", SCOPES, ids=str)
def test_a_viewers_subscription_means_to_the_portal_what_it_means_on_the_broker(scope: Scope) -> None:
    assert Scope.parse(scope.as_dict()) == scope  # the request the viewer sends, as the portal reads it
    (mqtt_filter,) = topic_filters([scope], ROOT)
    for topic in TOPICS:
        reading = read(topic, b"1")
        on_broker = filter_matches(mqtt_filter, topic)
        assert scope.holds(reading.topic.room, reading.topic.device) == on_broker, (scope, topic)


def test_the_last_millisecond_is_the_same_everywhere() -> None:
    at_most = read(f"{ROOT}/r/d/a", b'{"value": 1, "ts": %d}' % MAX_TS_MS)
    assert epoch_ms(at_most.ts) == MAX_TS_MS
    assert isinstance(
        parse_message(f"{ROOT}/r/d/a", b'{"value": 1, "ts": %d}' % (MAX_TS_MS + 1), NOW, ROOT), Rejection
    )
    to = Timestamp("to", "range end")
    assert to.read(MultiDict({"to": str(MAX_TS_MS)})) == MAX_TS_MS
    with pytest.raises(ParamError):
        to.read(MultiDict({"to": str(MAX_TS_MS + 1)}))
    alarm = b'{"type": "t", "severity": "major", "state": "active", "value": 1, "ts": %d}'
    assert isinstance(parse_alarm("alarms/r/d/t", alarm % MAX_TS_MS, NOW), AlarmMessage)
    assert not isinstance(parse_alarm("alarms/r/d/t", alarm % (MAX_TS_MS + 1), NOW), AlarmMessage)
    # The stress tool's send times are well inside
    assert float(stamp(NOW.timestamp() * 1000)) < MAX_TS_MS
