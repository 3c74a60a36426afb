"""The live coalescer: newest value per attribute, at most one flush per interval, routed by scope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.web.portal_testing import property_test
from web.cache import LatestValue
from web.coalescer import Coalescer, minimal_cover, route
from wire.names import MAX_NAME_CHARS
from wire.scopes import SITE_CHANNEL, Scope, ScopeError

T0 = datetime(2024, 1, 1, tzinfo=UTC)
EVERYONE = frozenset({SITE_CHANNEL})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def value(room: str, device: str, attr: str, v: float | str, seconds: float = 0) -> LatestValue:
    return LatestValue(room, device, attr, v, T0 + timedelta(seconds=seconds))


def values_of(flushed: dict[str, list[dict[str, Any]]] | None, channel: str = SITE_CHANNEL) -> list[Any]:
    assert flushed is not None
    return [(e["room"], e["device"], e["attr"], e["value"]) for e in flushed.get(channel, [])]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def coalescer(clock: FakeClock) -> Coalescer:
    return Coalescer(0.1, clock)


# -- timing --------------------------------------------------------------------------------


def test_nothing_pending_means_nothing_to_flush(coalescer: Coalescer) -> None:
    assert coalescer.wait_s() is None
    assert coalescer.flush(EVERYONE) is None


def test_first_value_after_a_quiet_period_goes_out_at_once(coalescer: Coalescer) -> None:
    coalescer.offer([value("r", "d", "t", 1.0)])
    assert coalescer.wait_s() == 0
    assert values_of(coalescer.flush(EVERYONE)) == [("r", "d", "t", 1.0)]
    assert coalescer.pending == 0


def test_at_most_one_flush_per_interval(coalescer: Coalescer, clock: FakeClock) -> None:
    coalescer.offer([value("r", "d", "t", 1.0)])
    assert coalescer.flush(EVERYONE) is not None
    clock.now += 0.04
    coalescer.offer([value("r", "d", "t", 2.0, 1)])
    assert coalescer.wait_s() == pytest.approx(0.06)
    assert coalescer.flush(EVERYONE) is None, "a second flush within the interval"
    clock.now += 0.061
    assert values_of(coalescer.flush(EVERYONE)) == [("r", "d", "t", 2.0)]


def test_one_update_per_attribute_per_interval_newest_wins(coalescer: Coalescer, clock: FakeClock) -> None:
    sent: list[list[Any]] = []
    for step in range(100):  # 10 updates per attribute per interval, on a 10 ms tick
        coalescer.offer([value("r", "d", "a", float(step), step), value("r", "d", "b", -float(step), step)])
        flushed = coalescer.flush(EVERYONE)
        if flushed is not None:
            sent.append(values_of(flushed))
        clock.now += 0.01
    clock.now += 0.2
    final = coalescer.flush(EVERYONE)
    if final is not None:
        sent.append(values_of(final))
    assert 10 <= len(sent) <= 11, "one flush per 100 ms over one second"
    for batch in sent:
        attrs = [attr for _r, _d, attr, _v in batch]
        assert sorted(attrs) == ["a", "b"], "each attribute at most once per flush"
    assert sorted(sent[-1]) == [("r", "d", "a", 99.0), ("r", "d", "b", -99.0)], "the final value arrives"


def test_older_value_never_replaces_a_newer_pending_one(coalescer: Coalescer) -> None:
    coalescer.offer([value("r", "d", "t", 2.0, 10), value("r", "d", "t", 1.0, 5)])
    assert values_of(coalescer.flush(EVERYONE)) == [("r", "d", "t", 2.0)]


def test_equal_timestamps_the_later_offer_wins(coalescer: Coalescer) -> None:
    coalescer.offer([value("r", "d", "t", 1.0, 5)])
    coalescer.offer([value("r", "d", "t", 2.0, 5)])
    assert values_of(coalescer.flush(EVERYONE)) == [("r", "d", "t", 2.0)]


def test_a_flush_nobody_listens_to_still_empties_the_queue(coalescer: Coalescer) -> None:
    coalescer.offer([value("r", "d", "t", 1.0)])
    assert coalescer.flush(set()) == {}
    assert coalescer.pending == 0


def test_interval_must_be_positive(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="positive"):
        Coalescer(0, clock)


def show(shown: dict[str, tuple[int, float]], flushed: dict[str, list[dict[str, Any]]] | None) -> None:
    """Apply a flush like the pages do: a value older than the one shown is ignored."""
    for event in (flushed or {}).get(SITE_CHANNEL, []):
        if event["attr"] not in shown or event["ts"] >= shown[event["attr"]][0]:
            shown[event["attr"]] = (event["ts"], event["value"])


@property_test
@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.integers(0, 50), st.integers(0, 5)),
        min_size=1,
        max_size=200,
    )
)
def test_after_the_last_flush_each_attribute_shows_its_newest_value(
    updates: list[tuple[str, int, int]],
) -> None:
    clock = FakeClock()
    coalescer = Coalescer(0.1, clock)
    shown: dict[str, tuple[int, float]] = {}
    newest: dict[str, tuple[int, float]] = {}
    for order, (attr, ts, advance_ms) in enumerate(updates):
        coalescer.offer([value("r", "d", attr, float(order), ts)])
        if attr not in newest or ts >= newest[attr][0]:
            newest[attr] = (ts, float(order))
        clock.now += advance_ms / 1000
        show(shown, coalescer.flush(EVERYONE))
    clock.now += 1
    show(shown, coalescer.flush(EVERYONE))
    assert {attr: v for attr, (_ts, v) in shown.items()} == {attr: v for attr, (_ts, v) in newest.items()}


# -- routing -------------------------------------------------------------------------------


def test_values_are_routed_only_to_listened_channels() -> None:
    values = [value("r1", "d1", "t", 1.0), value("r1", "d2", "t", 2.0), value("r2", "d1", "t", 3.0)]
    routed = route(values, {"room:r1", "device:r2/d1", "device:r9/x"})
    assert set(routed) == {"room:r1", "device:r2/d1"}
    assert [e["value"] for e in routed["room:r1"]] == [1.0, 2.0]
    assert [e["value"] for e in routed["device:r2/d1"]] == [3.0]
    assert route(values, set()) == {}


def test_one_event_object_is_shared_by_every_channel() -> None:
    routed = route([value("r", "d", "t", 1.0)], {SITE_CHANNEL, "room:r", "device:r/d"})
    assert routed[SITE_CHANNEL][0] is routed["room:r"][0] is routed["device:r/d"][0]
    assert routed[SITE_CHANNEL][0] == {
        "room": "r",
        "device": "d",
        "attr": "t",
        "value": 1.0,
        "ts": 1704067200000,
    }


def test_device_channel_cannot_be_confused_by_similar_names() -> None:
    routed = route([value("a", "b", "t", 1.0)], {"device:a/b", "room:a/b"})
    assert set(routed) == {"device:a/b"}


# -- scopes --------------------------------------------------------------------------------


def test_scopes_parse_into_channels() -> None:
    assert Scope.parse({"scope": "site"}).channel == SITE_CHANNEL
    assert Scope.parse({"scope": "room", "room": "lab"}).channel == "room:lab"
    device = Scope.parse({"scope": "device", "room": "lab", "device": "<script>"})
    assert device.channel == "device:lab/<script>"
    assert device.as_dict() == {"scope": "device", "room": "lab", "device": "<script>"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "expected an object"),
        ("site", "expected an object"),
        ([{"scope": "site"}], "expected an object"),
        ({}, '"scope" must be'),
        ({"scope": "everything"}, '"scope" must be'),
        ({"scope": ["site"]}, '"scope" must be'),
        ({"scope": "room"}, '"room" must be a string'),
        ({"scope": "room", "room": 5}, '"room" must be a string'),
        ({"scope": "room", "room": ""}, "empty name"),
        ({"scope": "room", "room": "a/b"}, "'/' in name"),
        ({"scope": "room", "room": "#"}, "'#' in name"),
        ({"scope": "room", "room": "+"}, "'+' in name"),
        ({"scope": "room", "room": "a\x00b"}, "control character"),
        ({"scope": "room", "room": "\ud800"}, "control character"),
        ({"scope": "room", "room": "lab\u200b"}, "invisible"),
        ({"scope": "room", "room": " lab"}, "white space"),
        ({"scope": "device", "room": "r"}, '"device" must be a string'),
        ({"scope": "device", "room": "r", "device": {"x": 1}}, '"device" must be a string'),
        ({"scope": "room", "room": "x" * (MAX_NAME_CHARS + 1)}, "longer than"),
    ],
)
def test_bad_scopes_are_refused_with_one_line(data: Any, message: str) -> None:
    with pytest.raises(ScopeError, match=r"^[^\n]*$") as caught:
        Scope.parse(data)
    assert message in str(caught.value)


def test_scope_holds_its_devices_values() -> None:
    assert Scope("site").holds("r", "d")
    assert Scope("room", "r").holds("r", "d")
    assert not Scope("room", "r2").holds("r", "d")
    assert Scope("device", "r", "d").holds("r", "d")
    assert not Scope("device", "r", "d2").holds("r", "d")
    assert not Scope("device", "r2", "d").holds("r", "d")


def test_minimal_cover_keeps_only_the_widest_scopes() -> None:
    site, room, device = Scope("site"), Scope("room", "r"), Scope("device", "r", "d")
    other_device = Scope("device", "r2", "d")
    assert minimal_cover([site, room, device]) == {site}
    assert minimal_cover([room, device, other_device]) == {room, other_device}
    assert minimal_cover([device, device]) == {device}
    assert minimal_cover([]) == set()
