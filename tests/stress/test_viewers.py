"""``stress viewers``: Socket.IO viewers of the lab's real portal, timed and checked for missed values."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from stress.viewers import ViewersInputError
from stress.viewers.audience import Audience, Plan, Result
from stress.viewers.reference import BrokerAccount, Final, is_missed, missed_keys, read_value
from stress.viewers.scopes import assign_scopes, topic_filters
from tests.conftest import RunningLab
from tests.mqtt_helpers import connect, publish
from tests.web.portal_testing import closed_port, signed_in_session
from wire.scopes import Scope

# ---------------------------------------------------------------------------- no services


@pytest.mark.parametrize(
    ("final", "seen", "missed"),
    [
        (Final(2.0, 2000, stamped=True), None, True),  # never seen at all
        (Final(2.0, 2000, stamped=True), (2000, 2.0), False),  # the final value itself
        (Final(2.0, 2000, stamped=True), (1000, 1.0), True),  # stuck on an older value
        (Final(2.0, 2000, stamped=True), (1000, 2.0), True),  # same value, but not the final update
        (Final(2.0, 2000, stamped=True), (2000, 1.0), True),  # same ts, the value that lost the tie
        (Final(2.0, 2000, stamped=True), (3000, 5.0), False),  # newer than the final: published later
        (Final("open", 2000, stamped=False), (1990, "open"), False),  # no device ts: the value decides
        (Final("open", 2000, stamped=False), (1990, "shut"), True),
        (Final("open", 2000, stamped=False), (2500, "shut"), False),  # stamped by the portal later
    ],
)
def test_a_final_value_is_missed_only_when_the_viewer_shows_an_older_one(
    final: Final, seen: tuple[int, Any] | None, missed: bool
) -> None:
    assert is_missed(final, seen) is missed


def test_missed_keys_names_each_attribute_a_viewer_lacks() -> None:
    finals = [
        (("r", "d1", "t"), Final(1.0, 10, stamped=True)),
        (("r", "d2", "t"), Final(2.0, 10, stamped=True)),
    ]
    assert missed_keys(finals, {("r", "d1", "t"): (10, 1.0), ("r", "d2", "t"): (5, 0.0)}) == [
        ("r", "d2", "t")
    ]


def test_viewers_are_dealt_round_robin_over_the_rooms_and_devices_that_exist() -> None:
    rooms = {"b": ["d1"], "a": ["d2", "d1"]}
    assert [s.room for s in assign_scopes("room", 3, rooms)] == ["a", "b", "a"]
    assert assign_scopes("room", 2, rooms, room="b") == [Scope("room", "b")] * 2
    devices = assign_scopes("device", 3, rooms)
    assert [(s.room, s.device) for s in devices] == [("a", "d1"), ("a", "d2"), ("b", "d1")]
    assert assign_scopes("site", 2, {}) == [Scope("site")] * 2
    with pytest.raises(ViewersInputError, match="no room 'c'"):
        assign_scopes("room", 1, rooms, room="c")
    with pytest.raises(ViewersInputError, match="no device 'd9'"):
        assign_scopes("device", 1, rooms, room="a", device="d9")
    with pytest.raises(ViewersInputError, match="no rooms yet"):
        assign_scopes("room", 1, {})


def test_viewers_watch_the_rooms_and_devices_seen_lately_when_there_are_any() -> None:
    rooms = {"old": ["d1"], "a": ["d1", "d2"], "b": ["d3"]}
    active = {("a", "d2"), ("b", "d3")}
    assert [s.room for s in assign_scopes("room", 3, rooms, active=active)] == ["a", "b", "a"]
    devices = assign_scopes("device", 3, rooms, active=active)
    assert [(s.room, s.device) for s in devices] == [("a", "d2"), ("b", "d3"), ("a", "d2")]
    assert [s.device for s in assign_scopes("device", 2, rooms, room="a", active=active)] == ["d2"] * 2
    # asked for by name, a silent room or device is still watched
    assert assign_scopes("room", 1, rooms, room="old", active=active) == [Scope("room", "old")]
    assert [s.device for s in assign_scopes("device", 1, rooms, room="old", active=active)] == ["d1"]
    assert assign_scopes("device", 1, rooms, room="a", device="d1", active=active)[0].device == "d1"
    # nothing seen lately: everything the portal knows
    assert [s.room for s in assign_scopes("room", 3, rooms, active=set())] == ["a", "b", "old"]


def test_the_reference_subscribes_to_the_fewest_filters_covering_every_scope() -> None:
    scopes = [Scope("room", "a"), Scope("device", "a", "d1"), Scope("device", "b", "d1")]
    assert topic_filters(scopes, "office") == ["office/a/+/+", "office/b/d1/+"]
    assert topic_filters([*scopes, Scope("site")], "office") == ["office/+/+/+"]


@pytest.mark.parametrize(
    ("payload", "read"),
    [
        (b'{"value": 21.5, "ts": 1700000000000}', (21.5, 1700000000000)),
        (b"true", (1.0, None)),
        (b" 7 ", (7.0, None)),
        (b"open", ("open", None)),
        (b'{"value": 1, "extra": 2}', None),  # the portal refuses it, so it is nobody's final value
        (b"two words", None),
        (b"NaN", None),
    ],
)
def test_payloads_are_read_as_the_portal_reads_them(payload: bytes, read: object) -> None:
    assert read_value(payload) == read


def stress(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stress", "viewers", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def assert_one_line(run: subprocess.CompletedProcess[str], status: int, words: str) -> None:
    lines = run.stderr.strip().splitlines()
    assert run.returncode == status, run.stderr
    assert len(lines) == 1, run.stderr
    assert words in lines[0]
    assert run.stdout == ""


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--count", "0"], "--count: 0 must be 1 or more"),
        (["--count", "5001"], "more than 5000"),
        (["--duration", "-1"], "--duration: -1 must be more than 0 seconds"),
        (["--portal", "not a url"], "is not an http:// or https:// address"),
        (["--portal", "http://127.0.0.1:99999"], "no valid port"),
        (["--scope", "site", "--room", "r1"], "--room is for --scope room or device"),
    ],
)
def test_bad_flags_are_one_line_and_status_2(flags: list[str], words: str) -> None:
    assert_one_line(stress(*flags), 2, words)


def test_flags_come_from_stress_variables_too() -> None:
    assert_one_line(stress(env={"STRESS_COUNT": "0"}), 2, "STRESS_COUNT='0': 0 must be 1 or more")


# ---------------------------------------------------------------------------- against the lab


def topic(lab: RunningLab, room: str, device: str, attr: str) -> str:
    return f"{lab.env.get('TOPIC_ROOT', 'office')}/{room}/{device}/{attr}"


def fleet_publish(lab: RunningLab, topic_name: str, value: float, ts: int) -> None:
    client = lab.mqtt_client(lab.env["LAB_FLEET_USER"], lab.env["LAB_FLEET_PASSWORD"])
    publish(client, lab.port("MQTT_PORT"), topic_name, json.dumps({"value": value, "ts": ts}))


def make_room(lab: RunningLab, room: str, devices: tuple[str, ...] = ("d1",)) -> None:
    """Publish a first value per device and wait until the portal lists the room."""
    for device in devices:
        fleet_publish(lab, topic(lab, room, device, "t"), 0.0, int(time.time() * 1000))
    session = signed_in_session(
        lab.portal_url, lab.env["PORTAL_ADMIN_USER"], lab.env["PORTAL_ADMIN_PASSWORD"]
    )
    for _ in range(100):
        listed = session.get(f"{lab.portal_url}/api/devices", params={"room": room}, timeout=10).json()
        if len(listed["devices"]) == len(devices):
            return
        time.sleep(0.1)
    raise AssertionError(f"the portal never listed room {room}")


@contextmanager
def publishing(lab: RunningLab, topics: list[str]) -> Iterator[None]:
    """Publish ``{"value": n, "ts": now}`` round the topics every 20 ms until the block ends."""
    done = threading.Event()
    client = lab.mqtt_client(lab.env["LAB_FLEET_USER"], lab.env["LAB_FLEET_PASSWORD"])
    assert not connect(client, lab.port("MQTT_PORT")).is_failure

    def loop() -> None:
        sequence = 0
        while not done.is_set():
            for name in topics:
                sequence += 1
                client.publish(name, json.dumps({"value": sequence, "ts": int(time.time() * 1000)}), qos=1)
            done.wait(0.02)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(5)
        client.disconnect()
        client.loop_stop()


@pytest.mark.integration
def test_viewers_of_a_room_get_every_final_value_and_time_each_update(
    lab: RunningLab, unique_room: str, tmp_path: Path
) -> None:
    make_room(lab, unique_room, ("d1", "d2"))
    topics = [topic(lab, unique_room, device, attr) for device in ("d1", "d2") for attr in ("t", "h")]
    with publishing(lab, topics):
        run = stress(
            "--env-file",
            str(lab.config.env_file),
            "--count",
            "5",
            "--scope",
            "room",
            "--room",
            unique_room,
            "--duration",
            "3",
            "--out",
            str(tmp_path),
        )
    assert run.returncode == 0, run.stderr
    result = json.loads((tmp_path / "viewers.json").read_text())
    assert (result["connected"], result["refused"], result["dropped"]) == (5, 0, 0)
    assert result["reference"]["attributes"] == 4, "the reference saw the room's four attributes"
    assert result["missed"] == 0
    assert result["viewers_with_missed"] == 0
    for viewer in result["per_viewer"]:
        assert viewer["scope"] == {"scope": "room", "room": unique_room}
        assert viewer["updates"] > 0
        assert viewer["latency_ms"]["count"] > 0
        assert viewer["out_of_scope"] == 0
        assert viewer["missed"] == 0
    assert result["latency_ms"]["count"] == sum(v["latency_ms"]["count"] for v in result["per_viewer"])
    assert "5 connected, 0 refused, 0 dropped" in run.stdout
    assert "missed       0 final values" in run.stdout


def portal_worker(lab: RunningLab) -> int:
    """The pid of the portal's gunicorn worker (the master's only child)."""
    master = lab.lab.pid(lab.lab.service("web"))
    assert master is not None
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


@pytest.mark.integration
def test_a_final_value_the_portal_never_pushes_is_missed_by_every_viewer(
    lab: RunningLab, unique_room: str
) -> None:
    # End to end and honest: the portal's worker is frozen (SIGSTOP) after the viewers have seen
    # a first value, so the final value reaches the broker and the reference but is never pushed.
    make_room(lab, unique_room)
    key = (unique_room, "d1", "t")
    name = topic(lab, unique_room, "d1", "t")
    plan = Plan(
        portal_url=lab.portal_url,
        username=lab.env["PORTAL_ADMIN_USER"],
        password=lab.env["PORTAL_ADMIN_PASSWORD"],
        count=2,
        scope="room",
        room=unique_room,
        settle_s=1.0,
        flush_s=int(lab.env.get("PORTAL_LIVE_FLUSH_MS", "100")) / 1000,
        reference=BrokerAccount(
            "127.0.0.1", lab.port("MQTT_PORT"), lab.env["LAB_FLEET_USER"], lab.env["LAB_FLEET_PASSWORD"]
        ),
    )

    async def watch() -> Result:
        async with Audience(plan) as audience:
            await audience.connect()
            first = int(time.time() * 1000)
            await asyncio.to_thread(fleet_publish, lab, name, 1.0, first)
            await until(
                lambda: all(w.last.get(key) == (first, 1.0) for w in audience.watchers), "first value"
            )
            worker = portal_worker(lab)
            os.kill(worker, signal.SIGSTOP)
            try:
                await asyncio.to_thread(fleet_publish, lab, name, 2.0, first + 1)
                reference = audience.reference
                assert reference is not None
                await until(lambda: key in reference.finals and reference.finals[key].value == 2.0, "final")
                return await audience.result()
            finally:
                os.kill(worker, signal.SIGCONT)

    result = asyncio.run(watch())
    assert result.missed() == (2, 2), "one missed final value for each of the two viewers"
    assert [w.missed for w in result.watchers] == [1, 1]
    assert [w.last[key][1] for w in result.watchers] == [1.0, 1.0], "both stuck on the first value"


@pytest.mark.integration
def test_a_wrong_password_is_one_line_and_status_1(lab: RunningLab) -> None:
    # A user name of its own: failed sign-ins are throttled per name, and other tests use the admin's.
    user = f"nobody-{uuid.uuid4().hex[:6]}"
    run = stress("--env-file", str(lab.config.env_file), "--username", user, "--password", "wrong")
    assert_one_line(run, 1, "wrong user name or password")


@pytest.mark.integration
def test_an_unreachable_portal_is_one_line_and_status_1(lab: RunningLab) -> None:
    portal = f"http://127.0.0.1:{closed_port()}"
    run = stress("--env-file", str(lab.config.env_file), "--portal", portal)
    assert_one_line(run, 1, f"cannot reach the portal at {portal}")


@pytest.mark.integration
def test_a_room_that_does_not_exist_is_one_line_and_status_2(lab: RunningLab, unique_room: str) -> None:
    run = stress("--env-file", str(lab.config.env_file), "--room", unique_room)
    assert_one_line(run, 2, f"the portal knows no room '{unique_room}'")
