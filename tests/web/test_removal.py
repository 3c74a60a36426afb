"""What a removal selects, the cache forgetting it, and a removal refused while the broker is away
(the unit tests' portal reaches neither broker nor database)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st

from tests.web.portal_testing import csrf_from
from web.cache import DeviceSeen, LatestCache, LatestValue
from web.removal import Selection

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def test_a_selection_names_a_room_or_a_prefix() -> None:
    with pytest.raises(ValueError, match="needs a room or a prefix"):
        Selection()
    with pytest.raises(ValueError, match="needs a room or a prefix"):
        Selection(device="d")
    with pytest.raises(ValueError, match="one device is named by its room"):
        Selection(device="d", prefix="p")
    with pytest.raises(ValueError, match="one device is named by its room"):
        Selection(room="r", device="d", prefix="p")


@pytest.mark.parametrize(
    ("selection", "chosen"),
    [
        (Selection(room="r", device="d"), {("r", "d")}),
        (Selection(room="r"), {("r", "d"), ("r", "d2"), ("r", "sim-1")}),
        (Selection(room="r", prefix="sim-"), {("r", "sim-1")}),
        (Selection(prefix="sim-"), {("r", "sim-1"), ("other", "sim-2")}),
        (Selection(prefix="d"), {("r", "d"), ("r", "d2")}),
    ],
)
def test_a_selection_matches_its_devices_only(selection: Selection, chosen: set[tuple[str, str]]) -> None:
    every = {("r", "d"), ("r", "d2"), ("r", "sim-1"), ("other", "sim-2"), ("rr", "x")}
    assert {key for key in every if selection.matches(*key)} == chosen


@given(room=st.text(min_size=1, max_size=8), device=st.text(min_size=1, max_size=8), cut=st.integers(0, 8))
def test_a_prefix_matches_exactly_the_names_it_begins(room: str, device: str, cut: int) -> None:
    prefix = device[:cut] or device
    assert Selection(prefix=prefix).matches(room, device)
    assert not Selection(prefix=device + "x").matches(room, device)
    assert Selection(room=room, prefix=prefix).matches(room, device)
    assert not Selection(room=room + "x", prefix=prefix).matches(room, device)


DEVICES = (("r", "sim-1"), ("r", "desk"), ("s", "sim-1"))


def test_the_cache_forgets_the_selection_only() -> None:
    cache = LatestCache()
    cache.load(
        [
            LatestValue(room, device, "t", 1.0, T0)
            for room, device in (("r", "sim-1"), ("r", "desk"), ("s", "sim-1"))
        ],
        [DeviceSeen(room, device, 1) for room, device in (("r", "sim-1"), ("r", "desk"), ("s", "sim-1"))],
    )
    cache.forget(Selection(room="r", prefix="sim-").matches)
    assert [(item.room, item.device) for item in cache.values()] == [("r", "desk"), ("s", "sim-1")]
    assert [(item.room, item.device) for item in cache.devices()] == [("r", "desk"), ("s", "sim-1")]
    assert cache.newer([LatestValue("r", "sim-1", "t", 0.0, T0)]) != [], "a forgotten value is not in the way"


def test_a_removal_is_refused_while_the_broker_is_away(signed_in: FlaskClient) -> None:
    token = csrf_from(signed_in.get("/").data)
    one = signed_in.delete("/api/devices/r/d", headers={"X-CSRF-Token": token})
    assert one.status_code == 503
    assert one.get_json() == {
        "error": "the portal is not connected to the broker (the rules must hear of a removal): "
        "try again in a moment"
    }
    many = signed_in.delete("/api/devices?room=r", headers={"X-CSRF-Token": token})
    assert many.status_code == 503
    bad = signed_in.delete("/api/devices", headers={"X-CSRF-Token": token})
    assert bad.status_code == 400, "a bad request is refused before anything else"
