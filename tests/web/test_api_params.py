"""API parameter validation: one-line 400s naming the parameter, before the database is asked."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from werkzeug.datastructures import MultiDict

from web.api.history import HistoryQuery
from web.api.params import ParamError
from wire.timestamps import ms_or_none as to_ms
from wire.timestamps import to_datetime

NOW = 1_700_000_000_000
BASE = {"room": "r", "device": "d", "attr": "a"}


def query(**args: str) -> HistoryQuery:
    return HistoryQuery.from_args(MultiDict({**BASE, **args}), now_ms=NOW)


def test_history_defaults_to_the_last_hour_raw() -> None:
    q = HistoryQuery.from_args(MultiDict(BASE), now_ms=NOW)
    assert (q.start_ms, q.end_ms) == (NOW - 3_600_000, NOW)
    assert (q.bucket_s, q.agg, q.limit) == (None, None, 10_000)


def test_history_bucket_defaults_to_avg() -> None:
    q = query(bucket="60")
    assert (q.bucket_s, q.agg) == (60, "avg")
    assert query(bucket="60", agg="last").agg == "last"


def test_only_to_given_means_the_hour_before_it() -> None:
    q = query(to="7200000")
    assert (q.start_ms, q.end_ms) == (3_600_000, 7_200_000)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ({"room": None}, "room"),
        ({"device": ""}, "device"),
        ({"attr": "a\x00b"}, "attr"),
        ({"attr": "x" * 1025}, "attr"),
        ({"from": "yesterday"}, "from"),
        ({"from": "1.5"}, "from"),
        ({"from": "-1"}, "from"),
        ({"to": "99999999999999999999999"}, "to"),
        ({"from": "2000", "to": "1000"}, "from"),
        ({"bucket": "0"}, "bucket"),
        ({"bucket": "1e3"}, "bucket"),
        ({"bucket": "1", "from": "0", "to": str(NOW)}, "bucket"),
        ({"bucket": "60", "agg": "median"}, "agg"),
        ({"agg": "avg"}, "agg"),
        ({"limit": "0"}, "limit"),
        ({"limit": "100001"}, "limit"),
        ({"limit": "١٢"}, "limit"),  # non-ASCII digits
    ],
)
def test_bad_history_parameters_name_the_parameter(args: dict[str, str | None], named: str) -> None:
    merged = {key: value for key, value in {**BASE, **args}.items() if value is not None}
    with pytest.raises(ParamError) as caught:
        HistoryQuery.from_args(MultiDict(merged), now_ms=NOW)
    message = str(caught.value)
    assert message.startswith(named)
    assert "\n" not in message


def test_exactly_100000_buckets_are_allowed() -> None:
    assert query(bucket="1", **{"from": "0", "to": "99999999"}).bucket_s == 1
    with pytest.raises(ParamError):
        query(bucket="1", **{"from": "0", "to": "100000000"})


def test_milliseconds_convert_exactly() -> None:
    for ms in (0, 1, 1_700_000_000_123, 253_402_300_799_999):
        assert to_ms(to_datetime(ms)) == ms


@pytest.mark.parametrize(
    "path",
    [
        "/api/history?room=r&device=d",
        "/api/history?room=r&device=d&attr=a&bucket=abc",
        "/api/alarms?state=open",
        "/api/alarms?limit=0",
        "/api/latest?room=",
        "/api/devices?room=%00",
    ],
)
def test_bad_parameters_are_400_json_before_the_database(signed_in: FlaskClient, path: str) -> None:
    response = signed_in.get(path)
    assert response.status_code == 400
    body = response.get_json()
    assert list(body) == ["error"]
    assert "\n" not in body["error"]
