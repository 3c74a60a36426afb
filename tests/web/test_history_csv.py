"""History as CSV (``GET /api/history?format=csv``) against a running lab: the header and one row per
point, a file name to save under, text a spreadsheet would run as a formula defused, the cut at
``limit`` said in a header, and a bad format refused."""

from __future__ import annotations

import csv
import io
import json
import time
from urllib.parse import quote

import pytest
import requests

from tests.conftest import RunningLab
from tests.web.portal_testing import api_token, publish_as

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


@pytest.fixture(scope="module")
def api(lab: RunningLab) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {api_token(lab, label='test_history_csv')}"
    return session


def publish(lab: RunningLab, room: str, device: str, attr: str, values: list[tuple[int, object]]) -> None:
    topic = f"{lab.env['TOPIC_ROOT']}/{room}/{device}/{attr}"
    publish_as(lab, "LAB_FLEET", [(topic, json.dumps({"value": v, "ts": ts})) for ts, v in values])


def history_csv(api: requests.Session, lab: RunningLab, **params: str | int) -> requests.Response:
    return api.get(f"{lab.portal_url}/api/history", params={"format": "csv", **params}, timeout=10)


def wait_rows(api: requests.Session, lab: RunningLab, count: int, **params: str | int) -> list[list[str]]:
    deadline = time.monotonic() + 10
    while True:
        answer = history_csv(api, lab, **params)
        rows = list(csv.reader(io.StringIO(answer.text)))
        if len(rows) == count + 1 or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_history_downloads_as_csv(api: requests.Session, lab: RunningLab, unique_room: str) -> None:
    device = "caf\u00e9 \u00e9tage"
    publish(lab, unique_room, device, "t", [(T0, 20.5), (T0 + 1000, -3.25), (T0 + 2000, 21)])
    where: dict[str, str | int] = {
        "room": unique_room,
        "device": device,
        "attr": "t",
        "from": T0,
        "to": T0 + 10_000,
    }
    rows = wait_rows(api, lab, 3, **where)
    assert rows == [
        ["ts", "time", "value"],
        [str(T0), "2023-11-14T22:13:20.000Z", "20.5"],
        [str(T0 + 1000), "2023-11-14T22:13:21.000Z", "-3.25"],
        [str(T0 + 2000), "2023-11-14T22:13:22.000Z", "21.0"],
    ]
    answer = history_csv(api, lab, **where)
    assert answer.headers["Content-Type"] == "text/csv; charset=utf-8"
    disposition = answer.headers["Content-Disposition"]
    assert disposition.startswith(f'attachment; filename="{unique_room}-caf___tage-t.csv"')
    assert disposition.endswith("filename*=UTF-8''" + quote(f"{unique_room}-{device}-t.csv", safe=""))
    assert answer.headers["X-History-Truncated"] == "false"
    assert answer.text.endswith("\r\n")

    cut = history_csv(api, lab, limit=2, **where)
    assert cut.headers["X-History-Truncated"] == "true"
    assert len(list(csv.reader(io.StringIO(cut.text)))) == 3

    bucketed = list(csv.reader(io.StringIO(history_csv(api, lab, bucket=10, agg="max", **where).text)))
    assert bucketed[1:] == [[str(T0), "2023-11-14T22:13:20.000Z", "21.0"]]


def test_text_a_spreadsheet_would_run_is_written_as_text(
    api: requests.Session, lab: RunningLab, unique_room: str
) -> None:
    hostile = ['=HYPERLINK("http://x")', "+1+1", "-cmd", "@SUM(A1)", 'plain, with "quotes"\nand a line']
    publish(lab, unique_room, "d", "note", [(T0 + n, text) for n, text in enumerate(hostile)])
    rows = wait_rows(
        api, lab, len(hostile), room=unique_room, device="d", attr="note", **{"from": T0, "to": T0 + 10}
    )
    assert [row[2] for row in rows[1:]] == [
        '\'=HYPERLINK("http://x")',
        "'+1+1",
        "'-cmd",
        "'@SUM(A1)",
        'plain, with "quotes"\nand a line',
    ]


@pytest.mark.parametrize("fmt", ["xml", "CSV", "", "csv "])
def test_an_unknown_format_is_refused(api: requests.Session, lab: RunningLab, fmt: str) -> None:
    answer = api.get(
        f"{lab.portal_url}/api/history",
        params={"room": "r", "device": "d", "attr": "a", "format": fmt},
        timeout=10,
    )
    assert answer.status_code == 400
    assert answer.json() == {"error": "format must be one of json, csv"}
