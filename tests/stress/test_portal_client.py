"""The lean Socket.IO viewer against the lab's real portal: accepted, refused, values received."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from stress.viewers.portal_client import Viewer, ViewerError, socketio_url
from tests.conftest import RunningLab
from tests.mqtt_helpers import publish
from tests.web.portal_testing import api_token


@pytest.mark.parametrize(
    ("portal", "expected"),
    [
        ("http://127.0.0.1:5000", "ws://127.0.0.1:5000/socket.io/?EIO=4&transport=websocket"),
        ("https://lab.example/", "wss://lab.example/socket.io/?EIO=4&transport=websocket"),
    ],
)
def test_the_socketio_url_follows_the_portal_scheme(portal: str, expected: str) -> None:
    assert socketio_url(portal) == expected


@pytest.mark.parametrize("portal", ["127.0.0.1:5000", "ftp://lab", "", "ws://lab"])
def test_a_portal_url_without_http_is_refused_in_one_line(portal: str) -> None:
    with pytest.raises(ViewerError, match="must start with http"):
        socketio_url(portal)


@pytest.mark.integration
def test_a_viewer_without_credentials_is_refused_with_the_reason(lab: RunningLab) -> None:
    async def attempt() -> None:
        viewer = Viewer(lab.portal_url, lambda _name, _data: None, auth={"token": "not-a-token"})
        async with aiohttp.ClientSession() as session:
            await viewer.connect(session, timeout=10)

    with pytest.raises(ViewerError, match="refused"):
        asyncio.run(attempt())


@pytest.mark.integration
def test_a_viewer_gets_the_snapshot_then_live_values_of_its_room(lab: RunningLab, unique_room: str) -> None:
    token = api_token(lab, label="viewer")
    events: list[tuple[str, Any]] = []
    topic_root = lab.env.get("TOPIC_ROOT", "office")

    async def watch() -> None:
        viewer = Viewer(
            lab.portal_url,
            lambda name, data: events.append((name, data)),
            auth={"token": token, "scopes": [{"scope": "room", "room": unique_room}]},
        )
        async with aiohttp.ClientSession() as session:
            await viewer.connect(session, timeout=10)
            listening = asyncio.create_task(viewer.listen())
            port = lab.port("MQTT_PORT")
            # Another room's value first: were it routed here, it would arrive before ours.
            other = lab.mqtt_client(lab.env["MQTT_ADMIN_USER"], lab.env["MQTT_ADMIN_PASSWORD"])
            await asyncio.to_thread(publish, other, port, f"{topic_root}/{unique_room}-not/d1/t", "1")
            client = lab.mqtt_client(lab.env["MQTT_ADMIN_USER"], lab.env["MQTT_ADMIN_PASSWORD"])
            await asyncio.to_thread(publish, client, port, f"{topic_root}/{unique_room}/d1/t", "21.5")
            for _ in range(100):
                if any(name == "values" for name, _data in events):
                    break
                await asyncio.sleep(0.1)
            await viewer.close()
            await asyncio.wait_for(listening, 10)

    asyncio.run(watch())
    names = [name for name, _data in events]
    assert names[:2] == ["status", "snapshot"], "the portal's status comes first, on connect"
    assert events[0][1]["problem"] == ""
    assert events[1][1] == [], "a new room has no values yet"
    values = [value for name, data in events if name == "values" for value in data]
    assert [(v["room"], v["device"], v["attr"], v["value"]) for v in values] == [
        (unique_room, "d1", "t", 21.5)
    ], "only the subscribed room's value, once"
