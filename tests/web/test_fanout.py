"""Live values between replicas (web.fanout): the message format, hostile messages, a real Redis that
is there, absent, and back, and the guard that keeps a late older value from being pushed."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
import redis

from labctl.config import free_ports
from tests.web.portal_testing import wait_for
from web.cache import LatestCache, LatestValue
from web.fanout import VALUES_CHANNEL, Fanout, RemovedDevices, decode, encode, encode_removal, newest_only
from web.snapshots import newest_of
from wire.scopes import Scope

T0 = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
PASSWORD = "fanout-test-password"
#: Redis keeps nothing on disk (it carries live messages only); its folder follows.
NO_DISK = ("--save", "", "--appendonly", "no", "--dir")


def value(device: str = "d1", attr: str = "t", v: float | str = 1.5, ts: datetime = T0) -> LatestValue:
    return LatestValue("lab", device, attr, v, ts)


def test_a_message_carries_values_exactly() -> None:
    values = [
        value(v=21.5),
        value("d2", "state", "open", T0 + timedelta(microseconds=1)),
        value("ünï/côdé", "x", -0.0, datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ]
    assert decode(encode(values)) == values
    assert decode(encode([])) == []


def test_a_removal_travels_whole() -> None:
    removed = RemovedDevices({"room": "lab", "prefix": "sim-"}, [("lab", "sim-1"), ("lab", "sim-2")])
    assert decode(encode_removal(removed)) == removed
    assert decode(encode_removal(RemovedDevices({"prefix": "x"}, []))) == RemovedDevices({"prefix": "x"}, [])


@pytest.mark.parametrize(
    ("message", "says"),
    [
        (b'{"removed": "lab", "devices": []}', "selection must be an object of names"),
        (b'{"removed": {"room": 1}, "devices": []}', "selection must be an object of names"),
        (b'{"removed": {"room": "lab"}}', "devices must be"),
        (b'{"removed": {"room": "lab"}, "devices": [["lab"]]}', "devices must be"),
        (b'{"removed": {"room": "lab"}, "devices": [["lab", 2]]}', "devices must be"),
        (b"{}", "selection must be"),
    ],
)
def test_a_malformed_removal_is_refused_with_what_is_wrong(message: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        decode(message)


def test_a_snapshot_takes_the_newest_of_the_table_and_the_cache() -> None:
    later = T0 + timedelta(seconds=5)
    table = [value("d1", v=1.0), value("d2", v=2.0), value("d4", v=4.0)]
    cache = [value("d1", v=10.0, ts=later), value("d3", v=3.0)]  # pushed live, not committed yet
    snapshot = newest_of(lambda _scope, limit: table[:limit], lambda _scope, limit: cache[:limit])
    room = Scope("room", "lab")
    assert [(v.device, v.value) for v in snapshot(room, 10)] == [
        ("d1", 10.0),
        ("d2", 2.0),
        ("d3", 3.0),
        ("d4", 4.0),
    ]
    assert [v.device for v in snapshot(room, 2)] == ["d1", "d2"]  # the first of the union, in order


@pytest.mark.parametrize(
    ("message", "says"),
    [
        (b"not json", "Expecting value"),
        (b'{"values": []}', "a removal's selection must be"),
        (b'"text"', "not a list of values"),
        (b"[[1, 2, 3]]", "not a value"),
        (b'[["r", "d", "a", 1.0]]', "not a value"),
        (b'[[1, "d", "a", 1.0, 0]]', "names must be text"),
        (b'[["r", "d", "a", true, 0]]', "value must be a number or text"),
        (b'[["r", "d", "a", null, 0]]', "value must be a number or text"),
        (b'[["r", "d", "a", [1], 0]]', "value must be a number or text"),
        (b'[["r", "d", "a", 1.0, 1.5]]', "time must be whole microseconds"),
        (b'[["r", "d", "a", 1.0, "0"]]', "time must be whole microseconds"),
        (b'[["r", "d", "a", 1.0, 99999999999999999999999]]', "out of range"),
        (b"\xff\xfe", "can't decode"),
    ],
)
def test_a_malformed_message_is_refused_with_what_is_wrong(message: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        decode(message)


def test_a_value_older_than_the_newest_known_is_not_pushed() -> None:
    cache = LatestCache()
    pushed: list[list[LatestValue]] = []
    receive = newest_only(cache, pushed.append)
    newer = value(v=2.0, ts=T0 + timedelta(seconds=1))
    receive([newer])
    receive([value(v=1.0, ts=T0), value("d2", v=5.0)])  # d1's is late: the other replica's older one
    receive([newer])  # the same value again (its own, back from Redis) still goes out
    assert pushed == [[newer], [value("d2", v=5.0)], [newer]]
    assert cache.values() == [newer, value("d2", v=5.0)]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A Redis of the test's own, with a password, on a free loopback port."""
    (port,) = free_ports(1)
    process = start_redis(tmp_path, port)
    try:
        yield port, process
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(10)


@pytest.fixture
def redis_port(redis_server: tuple[int, subprocess.Popen[bytes]]) -> int:
    return redis_server[0]


def start_redis(folder: Path, port: int) -> subprocess.Popen[bytes]:
    program = shutil.which("redis-server")
    assert program is not None, "redis-server is installed by ./lab test"
    process = subprocess.Popen(
        [
            program,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--requirepass",
            PASSWORD,
            *NO_DISK,
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, password=PASSWORD)
    wait_for("redis answers", lambda: _pings(client), 10)
    return process


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def url(port: int) -> str:
    return f"redis://:{PASSWORD}@127.0.0.1:{port}/0"


class Received:
    """What a fanout handed over, and how often Redis came back."""

    def __init__(self) -> None:
        self.values: list[LatestValue] = []
        self.resumed = 0
        self.lock = threading.Lock()

    def take(self, values: list[LatestValue]) -> None:
        with self.lock:
            self.values.extend(values)

    def has(self, count: int) -> bool:
        with self.lock:
            return len(self.values) == count

    def resume(self) -> None:
        self.resumed += 1


def test_every_replica_receives_every_value_and_garbage_is_skipped(redis_port: int) -> None:
    received = [Received(), Received()]
    fanouts = [Fanout(url(redis_port), r.take, on_resume=r.resume) for r in received]
    for fanout in fanouts:
        fanout.start()
    try:
        wait_for("both listening", lambda: all(f.problem is None for f in fanouts))
        time.sleep(0.3)  # subscribed before the first message
        fanouts[0].send([value("a")])
        redis.Redis(port=redis_port, password=PASSWORD).publish(VALUES_CHANNEL, b"[[garbage")
        fanouts[1].send([value("b"), value("c")])
        for r in received:
            wait_for("three values", partial(r.has, 3))
            assert sorted(v.device for v in r.values) == ["a", "b", "c"]
        assert [f.sent for f in fanouts] == [1, 2]
        assert [r.resumed for r in received] == [0, 0]
    finally:
        for fanout in fanouts:
            fanout.stop()


class Log:
    """Every value's device and every removal one replica received, in order."""

    def __init__(self) -> None:
        self.items: list[object] = []

    def values(self, values: list[LatestValue]) -> None:
        self.items.extend(v.device for v in values)

    def has(self, count: int) -> bool:
        return len(self.items) == count


def test_a_removal_reaches_every_replica_between_values_in_order(redis_port: int) -> None:
    logs = [Log(), Log()]
    fanouts = [Fanout(url(redis_port), log.values, forget=log.items.append) for log in logs]
    for fanout in fanouts:
        fanout.start()
    try:
        wait_for("both listening", lambda: all(f.problem is None for f in fanouts))
        time.sleep(0.3)
        removed = RemovedDevices({"room": "lab", "device": "b"}, [("lab", "b")])
        fanouts[0].send([value("a")])
        fanouts[0].removed(removed)
        fanouts[0].send([value("c")])
        for log in logs:
            wait_for("everything", partial(log.has, 3))
            assert log.items == ["a", removed, "c"]
    finally:
        for fanout in fanouts:
            fanout.stop()


def test_without_redis_sending_never_blocks_and_says_why_then_resumes_by_itself(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    received = Received()
    fanout = Fanout(url(port), received.take, on_resume=received.resume)
    fanout.start()
    process = None
    try:
        problem = wait_for("the reason named", lambda: "refused" in (fanout.problem or "") and fanout.problem)
        assert isinstance(problem, str)
        assert problem.startswith("live updates paused (Redis: Error 111 connecting to 127.0.0.1:")
        assert problem.endswith("; values are still stored")
        for n in range(2000):
            fanout.send([value(f"d{n}")])
        wait_for("the values not shared counted", lambda: fanout.dropped == 2000)

        process = start_redis(tmp_path, port)
        wait_for("back", lambda: fanout.problem is None, 10)
        assert received.resumed == 1
        time.sleep(0.3)
        fanout.send([value("after")])
        wait_for("a value through", lambda: received.values)
        assert [v.device for v in received.values] == ["after"]
    finally:
        fanout.stop()
        if process is not None:
            process.terminate()
            process.wait(10)


def test_a_frozen_redis_never_holds_up_the_sender(redis_server: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, process = redis_server
    fanout = Fanout(url(port), Received().take)
    fanout.start()
    try:
        wait_for("listening", lambda: fanout.problem is None)
        process.send_signal(signal.SIGSTOP)  # a Redis that takes connections and never answers
        sender = threading.Thread(target=send_many, args=(fanout, 20_000))
        sender.start()
        sender.join(30)  # a deadlock detector, not a speed limit: send must not wait for Redis
        assert not sender.is_alive(), "send waited for a frozen Redis"
        assert fanout.dropped > 0  # what waited beyond WAITING_MAX batches was let go
    finally:
        process.send_signal(signal.SIGCONT)
        fanout.stop()


def send_many(fanout: Fanout, count: int) -> None:
    for n in range(count):
        fanout.send([value(f"d{n}")])


def test_a_wrong_password_is_a_problem_not_a_crash(redis_port: int) -> None:
    fanout = Fanout(f"redis://:wrong@127.0.0.1:{redis_port}/0", Received().take)
    fanout.start()
    try:
        wait_for("the reason named", lambda: "invalid username-password pair" in (fanout.problem or ""))
    finally:
        fanout.stop()
