"""Targets: topics, payloads and commands from templates, hostile templates, and the lab's accounts."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labctl import envfile
from labctl.config import ROOT
from stress.behaviours import DeviceInfo, Value
from stress.errors import ScenarioError
from stress.mqtt.codec import MQTT5, MQTT311, ConnectOptions
from stress.payloads import literal
from stress.scenario import Broker, Scenario
from stress.shapes import timeline
from stress.targets.base import Target
from stress.targets.lab import LAB_DEFAULTS, LabTarget
from stress.targets.mqtt import MqttTarget
from stress.targets.registry import TARGETS, build

property_test = settings(database=None, deadline=None)

DEVICE = DeviceInfo(0, "dev00001", "room-01")
OTHER = DeviceInfo(1, "dev00002", "room-02")
THERMOSTAT = ("temperature", "humidity", "setpoint")
TS = 1_700_000_000_123.456
FLEET = {"username": "fleet", "password": "fleet-secret"}


def scenario(target: str = "mqtt", protocol: str = "3.1.1", **options: str) -> Scenario:
    return Scenario(
        target=target,
        broker=Broker(protocol="5" if protocol == "5" else "3.1.1"),
        stages=timeline("steady", 10, 1.0, 5),
        options=options,
    )


def target(**options: str) -> Target:
    return build(scenario(**options))


def topics(built: Target, attributes: tuple[str, ...] = THERMOSTAT, device: DeviceInfo = DEVICE) -> list[str]:
    return [code.topic for code in built.topics(device, attributes)]


def payloads(
    built: Target,
    values: tuple[Value, ...] = (21.5, 40.0, 22.0),
    seq: int = 7,
    attributes: tuple[str, ...] = THERMOSTAT,
) -> list[bytes]:
    return built.encoder(DEVICE, attributes)(values, seq, TS)


# ---------------------------------------------------------------------------- defaults


def test_build_picks_the_target_by_name() -> None:
    assert set(TARGETS) == {"lab", "mqtt", "thingsboard"}
    assert type(target()) is MqttTarget
    assert type(build(scenario("lab", **FLEET))) is LabTarget
    with pytest.raises(ScenarioError, match="unknown target 'coap': choose one of lab, mqtt, thingsboard"):
        build(scenario("coap"))


def test_default_topics_are_one_per_attribute_under_stress() -> None:
    built = target()
    assert topics(built) == [
        "stress/room-01/dev00001/temperature",
        "stress/room-01/dev00001/humidity",
        "stress/room-01/dev00001/setpoint",
    ]
    assert topics(built, ("on",), OTHER) == ["stress/room-02/dev00002/on"]
    assert {code.version for code in built.topics(DEVICE, THERMOSTAT)} == {MQTT311}


def test_default_payload_is_json_with_value_and_ts() -> None:
    rendered = payloads(target())
    assert rendered[0] == b'{"value":21.5,"ts":1700000000123.456}'
    assert [json.loads(payload) for payload in rendered] == [
        {"value": 21.5, "ts": TS},
        {"value": 40.0, "ts": TS},
        {"value": 22.0, "ts": TS},
    ]


def test_payload_values_of_every_kind_are_json() -> None:
    attributes = ("a", "b", "c", "d", "e")
    rendered = payloads(target(), (True, 3, 'on "x"', math.nan, -0.5), attributes=attributes)
    assert [json.loads(payload)["value"] for payload in rendered] == [True, 3, 'on "x"', None, -0.5]


def test_mqtt_logs_in_with_the_fleet_account_and_the_device_id() -> None:
    built = target(**FLEET)
    assert built.connect_options(DEVICE) == ConnectOptions(
        client_id="dev00001", username="fleet", password="fleet-secret", keepalive=60, version=MQTT311
    )
    anonymous = target().connect_options(DEVICE)
    assert (anonymous.username, anonymous.password) == (None, None)
    assert built.describe() == "mqtt at mqtt://127.0.0.1:1883 (MQTT 3.1.1)"


def test_a_password_without_a_user_name_is_refused_before_mqtt_5() -> None:
    # MQTT 3.1.1 forbids it, and the broker would drop every connection as a protocol error
    with pytest.raises(ScenarioError, match=r"a password needs a user name with MQTT 3\.1\.1"):
        target(password="secret")
    alone = target(password="secret", protocol="5").connect_options(DEVICE)
    assert (alone.username, alone.password) == (None, "secret")


def test_mqtt_5_is_used_for_topics_and_logins() -> None:
    built = target(protocol="5")
    assert {code.version for code in built.topics(DEVICE, THERMOSTAT)} == {MQTT5}
    assert built.connect_options(DEVICE).version == MQTT5
    assert built.describe().endswith("(MQTT 5)")


# ---------------------------------------------------------------------------- custom templates


def test_a_per_attribute_template_fills_every_placeholder() -> None:
    built = target(
        root="site",
        topic="{root}/{room}/{device}/{attr}/state",
        payload='{{"d":"{device}","r":"{room}","a":"{attr}","root":"{root}","v":{value},"n":{seq},"t":{ts}}}',
    )
    assert topics(built, ("temperature", "on")) == [
        "site/room-01/dev00001/temperature/state",
        "site/room-01/dev00001/on/state",
    ]
    rendered = built.encoder(DEVICE, ("temperature", "on"))((21.5, False), 42, TS)
    assert [json.loads(payload) for payload in rendered] == [
        {"d": "dev00001", "r": "room-01", "a": "temperature", "root": "site", "v": 21.5, "n": 42, "t": TS},
        {"d": "dev00001", "r": "room-01", "a": "on", "root": "site", "v": False, "n": 42, "t": TS},
    ]


def test_a_per_sample_template_sends_all_attributes_in_one_object() -> None:
    built = target(topic="fleet/{device}", payload='{{"values":{values},"seq":{seq},"ts":{ts}}}')
    assert topics(built) == ["fleet/dev00001"]
    rendered = payloads(built, (21.5, 40.0, 22.0), seq=3)
    assert len(rendered) == 1
    assert json.loads(rendered[0]) == {
        "values": {"temperature": 21.5, "humidity": 40.0, "setpoint": 22.0},
        "seq": 3,
        "ts": TS,
    }
    assert built.sent_at(rendered[0]) == TS


def test_a_payload_of_values_only_is_the_bare_object() -> None:
    built = target(topic="{device}", payload="{values}")
    assert payloads(built, ("x", 1, True), attributes=("s", "i", "b")) == [b'{"s":"x","i":1,"b":true}']
    assert built.sent_at(b'{"s":"x"}') is None


def test_seq_counts_the_devices_messages() -> None:
    built = target(payload="{seq}:{value}")
    encode = built.encoder(DEVICE, ("t",))
    assert [encode((1.5,), seq, TS) for seq in (0, 1, 65_536)] == [[b"0:1.5"], [b"1:1.5"], [b"65536:1.5"]]


def test_literal_percent_signs_and_braces_survive_templates() -> None:
    built = target(
        root="50%",
        topic="{root}/a%b%%c/{{x}}/{device}/{attr}",
        payload='{{"pct":"100% %d %s %b %%","v":{value},"brace":"{{}}"}}',
    )
    assert topics(built, ("t",)) == ["50%/a%b%%c/{x}/dev00001/t"]
    [rendered] = built.encoder(DEVICE, ("t",))((1.5,), 1, TS)
    assert rendered == b'{"pct":"100% %d %s %b %%","v":1.5,"brace":"{}"}'
    assert json.loads(rendered) == {"pct": "100% %d %s %b %%", "v": 1.5, "brace": "{}"}


def test_percent_signs_in_values_and_device_ids_are_not_formats() -> None:
    built = build(
        Scenario(
            target="mqtt",
            broker=Broker(),
            stages=timeline("steady", 1, 1.0, 1),
            prefix="d%s",
            options={"topic": "{device}/{attr}", "payload": '{{"d":"{device}","v":{value}}}'},
        )
    )
    device = DeviceInfo(0, "d%s00001", "room-01")
    assert topics(built, ("t",), device) == ["d%s00001/t"]
    assert built.encoder(device, ("t",))(("%s %b",), 1, TS) == [b'{"d":"d%s00001","v":"%s %b"}']


# ---------------------------------------------------------------------------- sent_at


def test_sent_at_reads_the_send_time_back() -> None:
    built = target()
    [payload] = built.encoder(DEVICE, ("t",))((21.5,), 1, TS)
    assert built.sent_at(payload) == TS
    assert built.sent_at(b'{"value":"text, with \\"quotes\\"","ts":12.5}') == 12.5
    assert built.sent_at(b'{"value":1,"ts":-3}') == -3.0


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"garbage",
        b'{"value":1,"ts":abc}',
        b'{"value":1,"ts":}',
        b'{"value":1,"ts":1.2.3}',
        b'{"value":1,"ts":1e}',
        b'{"value":1,"ts":12}trailing',
        b'{"value":1}',
        b"\xff\xfe\x00",
    ],
)
def test_sent_at_is_none_for_garbage(garbage: bytes) -> None:
    assert target().sent_at(garbage) is None


def test_sent_at_is_none_without_ts_and_then_nothing_is_timed_end_to_end() -> None:
    built = target(payload='{{"value":{value}}}')
    [payload] = built.encoder(DEVICE, ("t",))((1.0,), 1, TS)
    assert payload == b'{"value":1.0}'
    assert built.sent_at(payload) is None
    assert built.sent_at(b'{"value":1.0,"ts":5}') is None
    assert built.observer_options() is None
    timed = target(**FLEET).observer_options()
    assert timed is not None
    assert timed.client_id.startswith("stress-observer-")
    assert (timed.username, timed.password) == ("fleet", "fleet-secret")


@pytest.mark.parametrize(
    "template",
    ["{ts}", "{ts};{value}", "<{value}|{seq}|{ts}>", 'ts={ts} v="{value}"', "{value}{ts}"],
)
def test_sent_at_finds_ts_wherever_the_template_puts_it(template: str) -> None:
    built = target(payload=template)
    [payload] = built.encoder(DEVICE, ("t",))(("x1.5",), 12, TS)
    assert built.sent_at(payload) == TS


@property_test
@given(
    values=st.lists(
        st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text()),
        min_size=3,
        max_size=3,
    ),
    seq=st.integers(0, 2**31),
    epoch_ms=st.floats(0, 4e12),
)
def test_sent_at_reads_back_what_the_encoder_wrote(values: list[Value], seq: int, epoch_ms: float) -> None:
    for built in (target(), target(topic="f/{device}", payload='{{"seq":{seq},"v":{values},"ts":{ts}}}')):
        for payload in built.encoder(DEVICE, THERMOSTAT)(values, seq, epoch_ms):
            assert built.sent_at(payload) == float(f"{epoch_ms:.3f}")
            json.loads(payload)


# ---------------------------------------------------------------------------- commands


def test_without_a_command_topic_there_are_no_commands() -> None:
    built = target()
    assert built.command_filters(DEVICE) == []
    assert built.command_attr(DEVICE, "stress/room-01/dev00001/set/setpoint") is None


def test_a_command_topic_gives_a_filter_per_device_and_the_attribute() -> None:
    built = target(command_topic="{root}/{room}/{device}/set/{attr}")
    assert built.command_filters(DEVICE) == ["stress/room-01/dev00001/set/+"]
    assert built.command_filters(OTHER) == ["stress/room-02/dev00002/set/+"]
    assert built.command_attr(DEVICE, "stress/room-01/dev00001/set/setpoint") == "setpoint"
    for topic in [
        "stress/room-02/dev00002/set/setpoint",  # another device's
        "stress/room-01/dev00001/set",
        "stress/room-01/dev00001/set/setpoint/extra",
        "stress/room-01/dev00001/get/setpoint",
        "other/room-01/dev00001/set/setpoint",
        "",
    ]:
        assert built.command_attr(DEVICE, topic) is None, topic
    assert built.command_attr(OTHER, "stress/room-02/dev00002/set/on") == "on"


def test_the_attribute_may_sit_anywhere_in_the_command_topic() -> None:
    built = target(command_topic="cmd/{attr}/{device}")
    assert built.command_filters(DEVICE) == ["cmd/+/dev00001"]
    assert built.command_attr(DEVICE, "cmd/speed/dev00001") == "speed"
    assert built.command_attr(DEVICE, "cmd/speed/dev00002") is None


# ---------------------------------------------------------------------------- hostile templates


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"topic": "{root}/{nope}/{attr}"}, "--topic"),
        ({"topic": "{root}/{value}/{attr}"}, "--topic"),
        ({"topic": "{root}/{}/{attr}"}, "--topic"),
        ({"topic": "{root}/{0}/{attr}"}, "--topic"),
        ({"topic": "{root}/{device.x}/{attr}"}, "--topic"),
        ({"topic": "{root}/{device[0]}/{attr}"}, "--topic"),
        ({"topic": "{root}/{device:>8}/{attr}"}, "--topic"),
        ({"topic": "{root}/{device!r}/{attr}"}, "--topic"),
        ({"topic": "{root}/{device/{attr}"}, "--topic"),
        ({"topic": "{root}/device}/{attr}"}, "--topic"),
        ({"payload": '{{"value":{nope}}}'}, "--payload"),
        ({"payload": '{"value":{value}}'}, "--payload"),  # single braces around JSON
        ({"payload": "{value:>5}"}, "--payload"),
        ({"payload": "{value!s}"}, "--payload"),
        ({"payload": "{ts:.0f}"}, "--payload"),
        ({"payload": "{value"}, "--payload"),
        ({"payload": "value}"}, "--payload"),
        ({"payload": "{values}"}, "--payload"),  # per attribute: {value}, not {values}
        ({"topic": "f/{device}", "payload": "{value}"}, "--payload"),  # per sample: {values}
        ({"topic": "f/{device}", "payload": "{attr}:{values}"}, "--payload"),
        ({"root": "a/b"}, "--root"),
        ({"root": "+"}, "--root"),
        ({"root": "#"}, "--root"),
        ({"root": ""}, "--root"),
        ({"command_topic": "cmd/{device}"}, "--command-topic"),
        ({"command_topic": "cmd/{device}/{value}"}, "--command-topic"),
        ({"command_topic": "cmd/{device}/{attr"}, "--command-topic"),
    ],
)
def test_a_hostile_template_is_one_line_naming_its_flag(options: dict[str, str], flag: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        target(**options)
    message = str(caught.value)
    assert message.startswith(flag + " ")
    assert "\n" not in message


def test_an_unknown_placeholder_error_lists_the_allowed_ones() -> None:
    with pytest.raises(
        ScenarioError, match=r"unknown placeholder \{nope\}; use \{value\}, \{seq\}, \{ts\}, "
    ):
        target(payload="{nope}")
    with pytest.raises(
        ScenarioError, match=r"Single '\}' encountered .* \(write \{\{ and \}\} for literal braces\)$"
    ):
        target(payload='{{"value":{value}}')


@pytest.mark.parametrize("topic", ["{root}/+/{attr}", "{root}/{device}/{attr}/#", "#/{device}", ""])
def test_a_topic_that_cannot_be_published_to_is_refused(topic: str) -> None:
    payload = "{value}" if "{attr}" in topic else "{values}"
    with pytest.raises(ScenarioError, match="--topic"):
        target(topic=topic, payload=payload)


# ---------------------------------------------------------------------------- the lab


def test_the_lab_uses_its_fixed_topics_under_office() -> None:
    built = build(scenario("lab", **FLEET))
    assert built.name == "lab"
    assert topics(built, ("temperature",)) == ["office/room-01/dev00001/temperature"]
    assert json.loads(payloads(built, (21.5,), attributes=("temperature",))[0]) == {"value": 21.5, "ts": TS}
    assert built.command_filters(DEVICE) == ["office/room-01/dev00001/set/+"]
    assert built.command_attr(DEVICE, "office/room-01/dev00001/set/setpoint") == "setpoint"
    assert built.connect_options(DEVICE).username == "fleet"
    assert topics(build(scenario("lab", root="lab2", **FLEET)), ("on",)) == ["lab2/room-01/dev00001/on"]


@pytest.mark.parametrize(
    ("option", "flag"), [("topic", "--topic"), ("payload", "--payload"), ("command_topic", "--command-topic")]
)
def test_the_lab_refuses_its_fixed_templates(option: str, flag: str) -> None:
    with pytest.raises(ScenarioError, match=f"^{flag} is for --target mqtt"):
        build(scenario("lab", **{option: "x/{attr}"}, **FLEET))


def test_the_lab_refuses_a_root_with_a_slash() -> None:
    with pytest.raises(ScenarioError, match=r"^--root 'a/b'"):
        build(scenario("lab", root="a/b", **FLEET))


@pytest.mark.parametrize(
    "options", [{}, {"username": "fleet"}, {"password": "secret"}, {"username": "", "password": ""}]
)
def test_the_lab_needs_an_account(options: dict[str, str]) -> None:
    with pytest.raises(ScenarioError, match="needs the fleet account") as caught:
        build(scenario("lab", **options))
    assert "\n" not in str(caught.value)


def write_credentials(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_the_lab_logs_each_device_in_with_its_own_account(tmp_path: Path) -> None:
    file = write_credentials(tmp_path / "fleet.csv", "device,password\ndev00001,one\ndev00002,two%\n")
    built = build(scenario("lab", credentials=file))
    assert built.connect_options(DEVICE) == ConnectOptions(
        client_id="dev00001", username="dev00001", password="one", keepalive=60, version=MQTT311
    )
    assert built.connect_options(OTHER).password == "two%"


def test_the_lab_reads_credentials_in_any_column_order(tmp_path: Path) -> None:
    file = write_credentials(tmp_path / "fleet.csv", "password,note,device\nsecret,x,dev00001\n")
    assert build(scenario("lab", credentials=file)).connect_options(DEVICE).password == "secret"


def test_the_lab_names_a_missing_credentials_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.csv"
    with pytest.raises(
        ScenarioError, match=f"^cannot read --credentials {re.escape(str(missing))}: No such file"
    ):
        build(scenario("lab", credentials=str(missing)))


@pytest.mark.parametrize(
    "text", ["dev00001,one\ndev00002,two\n", "name,secret\ndev00001,one\n", "device\ndev00001\n"]
)
def test_the_lab_needs_the_device_password_header(tmp_path: Path, text: str) -> None:
    file = write_credentials(tmp_path / "fleet.csv", text)
    with pytest.raises(ScenarioError, match="needs the columns device,password"):
        build(scenario("lab", credentials=file))


def test_the_lab_refuses_a_credentials_file_that_is_not_text(tmp_path: Path) -> None:
    file = tmp_path / "fleet.csv"
    file.write_bytes(b"device,password\n\xff\xfe\x00\x81,x\n")
    with pytest.raises(ScenarioError, match="is not a device,password CSV file"):
        build(scenario("lab", credentials=str(file)))


def test_the_lab_names_a_device_missing_from_the_credentials(tmp_path: Path) -> None:
    file = write_credentials(tmp_path / "fleet.csv", "device,password\ndev00001,one\n")
    built = build(scenario("lab", credentials=file))
    with pytest.raises(ScenarioError, match=r"^device dev00002 has no account in --credentials") as caught:
        built.connect_options(OTHER)
    assert "stress provision --target lab --devices 10 --prefix dev" in str(caught.value)


def test_the_lab_defaults_are_those_of_env_example_for_every_setting_stress_reads() -> None:
    example = envfile.read(ROOT / ".env.example")
    defaults = {name: value for name, value in example.items() if not envfile.is_secret(name)}
    read: set[str] = set()
    for source in (ROOT / "stress").rglob("*.py"):
        read |= set(re.findall(r"[\"']([A-Z][A-Z0-9_]+)[\"']", source.read_text())) & set(defaults)
    assert read >= {"TOPIC_ROOT", "MQTT_PORT", "LAB_FLEET_USER"}  # the scan finds what it looks for
    assert {name: defaults[name] for name in read} == LAB_DEFAULTS


# ---------------------------------------------------------------------------- literal()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (21.5, b"21.5"),
        (22.0, b"22.0"),
        (-0.25, b"-0.25"),
        (1e300, b"1e+300"),
        (1e-7, b"1e-07"),
        (0, b"0"),
        (-42, b"-42"),
        (10**20, b"100000000000000000000"),
        (True, b"true"),
        (False, b"false"),
        ("on", b'"on"'),
        ("", b'""'),
        ('a "b"\n', b'"a \\"b\\"\\n"'),
        ("ü", b'"\\u00fc"'),
        (math.nan, b"null"),
        (math.inf, b"null"),
        (-math.inf, b"null"),
    ],
)
def test_literal_writes_json(value: Value, text: bytes) -> None:
    assert literal(value) == text


@property_test
@given(st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text()))
def test_literal_parses_back_as_json(value: Value) -> None:
    parsed = json.loads(literal(value))
    assert parsed == value
    assert type(parsed) is type(value)


def test_zero_and_minus_zero_keep_their_own_text() -> None:
    # They are equal as keys of the text cache, so neither may be answered for the other
    assert [literal(0.0), literal(-0.0), literal(0.0), literal(-0.0)] == [b"0.0", b"-0.0", b"0.0", b"-0.0"]
    assert literal(21.5) == literal(21.5) == b"21.5"  # the second from the cache


def test_a_value_only_payload_is_each_value_as_json() -> None:
    built = target(payload="{value}")
    encode = built.encoder(DEVICE, ("a", "b", "c", "d", "e"))
    first = encode([1.0, True, 1, -0.0, math.nan], 1, 0.0)
    assert first == [b"1.0", b"true", b"1", b"-0.0", b"null"]  # 1.0, True and 1 are equal keys
    assert encode([True, 1.0, 1, 0.0, 2.5], 2, 0.0) == [b"true", b"1.0", b"1", b"0.0", b"2.5"]
