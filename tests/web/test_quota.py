"""The cap on devices: a flood of invented names stops at the caps, known devices go on."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from flask import Flask
from flask_socketio import SocketIO

from tests.web.portal_testing import make_settings
from web.alarm_messages import AlarmRejection
from web.alarms import Alarms
from web.buffer import ReadingBuffer
from web.ingest import Ingest
from web.messages import Reading
from web.metrics import Metrics
from web.quota import LOG_EVERY_S, DeviceQuota
from wire.rejections import Reason, Rejection


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_new_devices_are_admitted_up_to_the_room_cap() -> None:
    announced: list[int] = []
    quota = DeviceQuota(per_room=3, total=100, on_new=lambda: announced.append(1))
    assert [quota.admit("lab", f"d{i}") for i in range(5)] == [True, True, True, False, False]
    assert quota.admit("lab", "d0"), "a known device goes on"
    assert quota.admit("hall", "d0"), "another room has room"
    assert quota.devices == 4 and quota.refused == 2
    assert len(announced) == 4, "each new device is announced, refused ones are not"


def test_the_lab_cap_holds_across_rooms() -> None:
    quota = DeviceQuota(per_room=10, total=3)
    assert [quota.admit(f"room{i}", "d") for i in range(5)] == [True, True, True, False, False]
    assert not quota.allows("room9", "d") and quota.allows("room0", "d")


def test_devices_from_the_database_count_and_removed_ones_make_room() -> None:
    quota = DeviceQuota(per_room=2, total=10)
    quota.load([("lab", "a"), ("lab", "b"), ("lab", "c")])  # already past the cap: kept
    assert quota.admit("lab", "c") and not quota.admit("lab", "d")
    quota.forget([("lab", "a"), ("lab", "b"), ("lab", "nobody")])
    assert quota.admit("lab", "d") and not quota.admit("lab", "e")


def test_hitting_a_cap_is_logged_once_per_room_per_ten_minutes(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    quota = DeviceQuota(per_room=1, total=100, clock=clock)
    caplog.set_level(logging.WARNING, logger="web.quota")
    quota.admit("lab", "a")
    for index in range(50):
        quota.admit("lab", f"x{index}")
    quota.admit("hall", "a")
    quota.admit("hall", "b")
    assert len(caplog.records) == 2, "one line for lab, one for hall"
    assert "PORTAL_MAX_DEVICES_PER_ROOM" in caplog.records[0].getMessage()
    clock.now += LOG_EVERY_S
    quota.admit("lab", "late")
    assert len(caplog.records) == 3


def test_ingest_refuses_readings_of_devices_past_the_cap() -> None:
    buffer = ReadingBuffer(100)
    quota = DeviceQuota(per_room=2, total=100)
    ingest = Ingest(make_settings(), buffer, Metrics(), clock=lambda: datetime.now(UTC), quota=quota)
    results = [ingest.handle(f"office/lab/d{i}/t".encode(), b"1") for i in range(4)]
    assert [type(result) for result in results] == [Reading, Reading, Rejection, Rejection]
    refused = results[2]
    assert isinstance(refused, Rejection) and refused.reason is Reason.DEVICE_LIMIT
    assert isinstance(ingest.handle(b"office/lab/d0/t", b"2"), Reading), "known devices go on"
    assert len(buffer) == 3
    counted = ingest.metrics.registry.get_sample_value(
        "portal_ingest_rejected_total", {"reason": "device_limit"}
    )
    assert counted == 2


def test_alarms_of_devices_past_the_cap_are_refused() -> None:
    quota = DeviceQuota(per_room=1, total=100)
    quota.admit("lab", "known")
    stored: list[object] = []

    class Store:
        def record(self, message: object) -> None:
            stored.append(message)

    metrics = Metrics()
    alarms = Alarms(Store(), SocketIO(Flask(__name__)), metrics, room="site", allows=quota.allows)  # type: ignore[arg-type]
    alarms.handle("alarms/lab/known/offline", b'{"state": "active"}')
    alarms.handle("alarms/lab/stranger/offline", b'{"state": "active"}')
    assert len(stored) == 1
    reason = AlarmRejection.DEVICE_LIMIT.value
    assert metrics.registry.get_sample_value("portal_alarms_rejected_total", {"reason": reason}) == 1
