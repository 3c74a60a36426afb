"""Grafana's view of the lab: the read-only role `grafana` and the dashboard of grafana/dashboards/.

Grafana does not run here. Its queries are sent as Grafana 11's PostgreSQL data source sends them,
as the role `grafana`: the dashboard's variables are replaced first, in the browser (a single-value
variable by its text with each ``'`` doubled, inside the quotes the SQL writes around it; the
``@grafana/sql`` package's ``interpolateVariable``), then the macros on the server
(``pkg/tsdb/grafana-postgresql-datasource/macros.go``)::

    $__timeFilter(ts)            ts BETWEEN '<from>' AND '<to>'   (UTC, Go's RFC 3339 with nanoseconds)
    $__timeGroupAlias(ts, 60s)   floor(extract(epoch from ts)/60)*60 AS "time"

A macro the dashboard starts using that is not emulated here fails the tests rather than passing
unexpanded. The tests that change the role's password run the migrations again, as the portal's
next start would, and restore the lab's own password after.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from db.migrations.grafana_role import (
    CONNECTION_LIMIT,
    IDLE_IN_TRANSACTION_TIMEOUT,
    READABLE,
    ROLE,
    STATEMENT_TIMEOUT,
)
from labctl import envfile
from tests.conftest import RunningLab
from tests.mqtt_helpers import connect
from tests.web.portal_testing import wait_for
from web.settings import DatabaseSettings, SettingsError

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "grafana" / "dashboards" / "lab.json"
DATASOURCES = REPO / "grafana" / "provisioning" / "datasources" / "lab.yaml"
WAIT_S = 10.0
#: What `$__interval` stands for in these tests: Grafana derives it from the range and the panel width.
INTERVAL = "60s"
#: Grafana's own variables the dashboard may use besides its template variables.
BUILT_IN = {"__interval"}
#: A password that breaks anything that formats it into SQL, a shell line or a format string.
HOSTILE_PASSWORD = "it's \"me\" \\' \\\\ $$ $q$ ; DROP ROLE lab; -- %s %(pw)s :pw {pw} é€"


# --- Grafana's expansion of a query ---------------------------------------------------------------

_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")
_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")
_INTERVAL = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def interpolate_variables(query: str, values: dict[str, str]) -> str:
    """Grafana's browser side: each known single-value variable becomes its text, ``'`` doubled.

    Unknown names (the macros, ``$__timeFilter``...) are left for the server, as Grafana does.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values[name].replace("'", "''") if name in values else match.group(0)

    return _VARIABLE.sub(replace, query)


def go_rfc3339_nano(moment: datetime) -> str:
    """Go's ``time.RFC3339Nano`` of the UTC instant: no trailing zeros in the fraction, ``Z``."""
    utc = moment.astimezone(UTC)
    fraction = f"{utc.microsecond:06d}".rstrip("0")
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def go_number(value: float) -> str:
    """Go's ``%v`` of a float64 of ordinary size: ``60``, ``0.5``."""
    return str(int(value)) if value.is_integer() else repr(value)


def expand_macros(query: str, start: datetime, end: datetime) -> str:
    """Grafana's server side: the PostgreSQL data source's macros, for the range ``start``-``end``."""

    def evaluate(match: re.Match[str]) -> str:
        name, args = match.group(1), [arg.strip(" ") for arg in match.group(2).split(",")]
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{go_rfc3339_nano(start)}' AND '{go_rfc3339_nano(end)}'"
        if name == "__timeGroupAlias":
            interval = _INTERVAL.fullmatch(args[1].strip("'"))
            assert interval, f"an interval Grafana would parse, not {args[1]!r}"
            seconds = go_number(float(interval[1]) * _UNIT_SECONDS[interval[2]])
            return f'floor(extract(epoch from {args[0]})/{seconds})*{seconds} AS "time"'
        raise AssertionError(f"the dashboard uses ${name}, which this test does not expand yet")

    return _MACRO.sub(evaluate, query)


def expand(query: str, values: dict[str, str], start: datetime, end: datetime) -> str:
    """The SQL Grafana sends for `query` with these variable values and this time range."""
    return expand_macros(interpolate_variables(query, {"__interval": INTERVAL, **values}), start, end)


def test_expansion_matches_grafana_s_examples() -> None:
    start = datetime(2017, 4, 21, 5, 1, 17, tzinfo=UTC)
    end = start + timedelta(minutes=5, milliseconds=250)
    assert expand("WHERE $__timeFilter(ts)", {}, start, end) == (
        "WHERE ts BETWEEN '2017-04-21T05:01:17Z' AND '2017-04-21T05:06:17.25Z'"
    )
    assert expand("SELECT $__timeGroupAlias(ts, $__interval)", {}, start, end) == (
        'SELECT floor(extract(epoch from ts)/60)*60 AS "time"'
    )
    assert expand("room = '$room' AND d = '${device}'", {"room": "it's", "device": "d"}, start, end) == (
        "room = 'it''s' AND d = 'd'"
    )
    with pytest.raises(AssertionError, match="__timeFrom"):
        expand("$__timeFrom()", {}, start, end)


# --- The dashboard, read statically -------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """One SQL query the dashboard sends: a variable's or a panel's."""

    kind: str  # "variable" or "panel"
    name: str  # the variable's name, or the panel's type
    sql: str


def load_dashboard() -> dict[str, Any]:
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def dashboard_queries(dashboard: dict[str, Any]) -> list[Query]:
    """Every query of the dashboard's variables and panels."""
    queries = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]  # the SQL, or (Grafana 10 and later) an object holding it
            text = query if isinstance(query, str) else query["rawSql"]
            queries.append(Query("variable", variable["name"], text))
    for panel in dashboard["panels"]:
        queries.extend(Query("panel", panel["type"], target["rawSql"]) for target in panel["targets"])
    return queries


# All in a lookahead, so that the search goes on right after FROM and finds the FROMs of subqueries.
_FROM_ITEMS = re.compile(
    r"\b(?:from|join)\s+(?=(.*?)(?:\b(?:where|group|order|limit|having|window|union|on|join|cross|inner"
    r"|left|right|full|natural)\b|\)|;|$))",
    re.IGNORECASE | re.DOTALL,
)


def relations(query: str) -> set[str]:
    """The names after FROM and JOIN (and commas between them); a subquery shows as ``(select``."""
    query = re.sub(r"\bextract\s*\(\s*\w+\s+from\b", "extract(", query, flags=re.IGNORECASE)
    found = set()
    for items in _FROM_ITEMS.finditer(query):
        for item in items.group(1).split(","):
            words = item.split()
            assert words, f"an empty FROM item in {query!r}"
            found.add(words[0].strip('"').lower())
    return found


def test_relations_finds_every_table_a_query_names() -> None:
    assert relations("SELECT 1 FROM readings WHERE x") == {"readings"}
    joined = "SELECT extract(epoch from ts) FROM readings r JOIN users u ON true"
    assert relations(joined) == {"readings", "users"}
    assert relations("SELECT * FROM readings, public.telemetry") == {"readings", "public.telemetry"}
    assert relations("SELECT * FROM (SELECT * FROM users) AS x") == {"(select", "users"}


def test_dashboard_is_json_whose_every_query_reads_only_readings() -> None:
    dashboard = load_dashboard()
    queries = dashboard_queries(dashboard)
    assert {query.name for query in queries if query.kind == "panel"} == {"timeseries", "table"}
    assert {query.name for query in queries if query.kind == "variable"} == {"room", "device", "attr"}
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for query in queries:
        values = dict.fromkeys(("room", "device", "attr"), "x")
        assert relations(expand(query.sql, values, start, start + timedelta(hours=1))) == {READABLE}, query


def test_dashboard_uses_the_provisioned_data_source_and_its_own_variables() -> None:
    dashboard = load_dashboard()
    (source,) = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]
    expected = {"type": source["type"], "uid": source["uid"]}
    sources = [panel["datasource"] for panel in dashboard["panels"]]
    sources += [target["datasource"] for panel in dashboard["panels"] for target in panel["targets"]]
    sources += [variable["datasource"] for variable in dashboard["templating"]["list"]]
    assert all(found == expected for found in sources), sources
    defined = {variable["name"] for variable in dashboard["templating"]["list"]} | BUILT_IN
    for query in dashboard_queries(dashboard):
        used = {a or b for a, b in _VARIABLE.findall(query.sql)} - {m[0] for m in _MACRO.findall(query.sql)}
        assert used <= defined, f"{query}: undefined {used - defined}"


# --- The password's setting ----------------------------------------------------------------------


def test_the_password_is_optional_but_never_blank(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("GRAFANA_DB_PASSWORD", raising=False)
    monkeypatch.setenv("POSTGRES_PASSWORD", "secret")
    assert DatabaseSettings.from_env().grafana_db_password is None  # the migrations leave the role alone
    monkeypatch.setenv("GRAFANA_DB_PASSWORD", " ")
    with pytest.raises(SettingsError, match="GRAFANA_DB_PASSWORD is empty"):
        DatabaseSettings.from_env()


# --- Against the lab ------------------------------------------------------------------------------


def grafana_db(lab: RunningLab, password: str | None = None) -> psycopg.Connection[tuple[Any, ...]]:
    """A connection as Grafana's data source makes it: role `grafana`, database `lab`."""
    return psycopg.connect(
        host="127.0.0.1",
        port=lab.port("POSTGRES_PORT"),
        user=ROLE,
        dbname="lab",
        password=lab.env["GRAFANA_DB_PASSWORD"] if password is None else password,
        autocommit=True,
        connect_timeout=10,
    )


def migrate(
    lab: RunningLab, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """`alembic upgrade head` as the portal runs it at start: the lab's environment, or `env`."""
    return subprocess.run(
        [str(lab.config.venv / "bin" / "alembic"), "-c", str(REPO / "db" / "alembic.ini"), "upgrade", "head"],
        cwd=cwd,
        env=lab.config.service_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def restore_password(lab: RunningLab) -> Iterator[None]:
    """After the test, the role has the lab's own password again (the next run of the migrations)."""
    yield
    result = migrate(lab)
    assert result.returncode == 0, result.stderr
    with grafana_db(lab):
        pass


def publish(lab: RunningLab, readings: list[tuple[str, str, str, object, int]]) -> None:
    """Publish (room, device, attr, value, ts in s) at QoS 1 as the fleet account; wait until stored."""
    client = lab.mqtt_client(lab.env["LAB_FLEET_USER"], lab.env["LAB_FLEET_PASSWORD"])
    root = lab.env["TOPIC_ROOT"]
    assert not connect(client, lab.port("MQTT_PORT")).is_failure
    try:
        messages = [
            (f"{root}/{room}/{device}/{attr}", json.dumps({"value": value, "ts": ts * 1000}))
            for room, device, attr, value, ts in readings
        ]
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
    rooms = sorted({reading[0] for reading in readings})

    def stored() -> bool:
        with lab.db() as conn:
            row = conn.execute("SELECT count(*) FROM readings WHERE room = ANY(%s)", (rooms,)).fetchone()
        return row is not None and row[0] == len(readings)

    wait_for(f"{len(readings)} readings stored", stored, WAIT_S)


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@pytest.mark.integration
def test_every_query_of_the_dashboard_returns_what_was_published(lab: RunningLab, unique_room: str) -> None:
    room = f"{unique_room}'s"  # Grafana doubles the quote; the SQL must put the value inside quotes
    base = (int(time.time()) // 60 - 10) * 60  # a minute boundary, ten minutes ago
    before_range = base - 3600
    publish(
        lab,
        [
            (room, "dev-a", "temperature", 20.0, base),
            (room, "dev-a", "temperature", 22.0, base + 30),
            (room, "dev-a", "temperature", 25.0, base + 60),
            (room, "dev-a", "temperature", 99.0, before_range),
            (room, "dev-a", "humidity", 40, base + 10),
            (room, "dev-a", "door", "closed", base + 20),
            (room, "dev-a", "door", "open", before_range),
            (room, "dev-b", "temperature", 5.0, base + 5),
        ],
    )
    start, end = at(base - 30.5), at(base + 120)  # Grafana's ranges have milliseconds
    values = {"room": room, "device": "dev-a", "attr": "temperature"}
    expected: dict[tuple[str, str], list[tuple[Any, ...]]] = {
        ("variable", "device"): [("dev-a",), ("dev-b",)],
        ("variable", "attr"): [("humidity",), ("temperature",)],  # numbers only: door is text
        ("panel", "timeseries"): [(base, 21.0), (base + 60, 25.0)],  # averages of whole minutes
        ("panel", "table"): [
            ("door", at(base + 20), "closed"),
            ("humidity", at(base + 10), "40"),
            ("temperature", at(base + 60), "25"),
        ],
    }
    queries = dashboard_queries(load_dashboard())
    with grafana_db(lab) as conn:
        got = {
            (query.kind, query.name): conn.execute(expand(query.sql, values, start, end).encode()).fetchall()
            for query in queries
        }
    # other tests' rooms may have readings in the range too
    rooms = got.pop(("variable", "room"))
    assert (room,) in rooms
    assert rooms == sorted(set(rooms))
    got["panel", "timeseries"] = [(int(bucket), value) for bucket, value in got["panel", "timeseries"]]
    assert got == expected


def other_relations(lab: RunningLab) -> list[str]:
    """Every table, view and sequence of the lab's schema but `readings`."""
    with lab.db() as conn:
        rows = conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            " AND relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND relname <> %s ORDER BY 1",
            (READABLE,),
        ).fetchall()
    return [str(row[0]) for row in rows]


@pytest.mark.integration
def test_the_role_may_read_no_other_table(lab: RunningLab) -> None:
    others = other_relations(lab)
    assert {"telemetry", "latest", "rooms", "devices", "users", "api_tokens", "sessions", "alarms"} <= set(
        others
    )
    with grafana_db(lab) as conn:
        conn.execute("SELECT count(*) FROM readings")
        for name in others:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                conn.execute(sql.SQL("SELECT * FROM {} LIMIT 1").format(sql.Identifier(name)))


WRITES = (
    "INSERT INTO telemetry (ts, attribute_id, value_num) VALUES (now(), 1, 1)",
    "UPDATE users SET id = id",
    "DELETE FROM sessions",
    "DELETE FROM alarms",
    "TRUNCATE api_tokens",
    "CREATE TABLE grafana_was_here (x int)",
    "CREATE VIEW grafana_was_here AS SELECT 1",
    "CREATE TEMPORARY TABLE grafana_was_here (x int)",
    "SELECT lo_from_bytea(0, 'large objects are writes too')",
    "SELECT lo_create(0)",
    "SELECT nextval('users_id_seq')",
)


@pytest.mark.integration
def test_the_role_writes_nothing_even_when_it_asks_for_read_write(lab: RunningLab) -> None:
    with grafana_db(lab) as conn:
        assert conn.execute("SHOW transaction_read_only").fetchone() == ("on",)
        for statement in WRITES:
            with pytest.raises(psycopg.Error, match=r"read-only transaction|permission denied"):
                conn.execute(statement.encode())
        # The read-only default is a second line: a session may lift it, the privileges still hold.
        conn.execute("SET default_transaction_read_only = off")
        assert conn.execute("SHOW transaction_read_only").fetchone() == ("off",)
        for statement in WRITES:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                conn.execute(statement.encode())


@pytest.mark.integration
def test_the_role_s_sessions_are_bounded(lab: RunningLab) -> None:
    with ExitStack() as stack:
        sessions = [stack.enter_context(grafana_db(lab)) for _ in range(CONNECTION_LIMIT)]
        settings = sessions[0].execute("SHOW statement_timeout").fetchone()
        idle = sessions[0].execute("SHOW idle_in_transaction_session_timeout").fetchone()
        assert (settings, idle) == ((STATEMENT_TIMEOUT,), (IDLE_IN_TRANSACTION_TIMEOUT,))
        with pytest.raises(psycopg.OperationalError, match="too many connections for role"):
            grafana_db(lab).close()
    with lab.db() as conn:
        role = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolinherit"
            " FROM pg_roles WHERE rolname = %s",
            (ROLE,),
        ).fetchone()
    assert role == (False, False, False, False, False, False)


def database_state(lab: RunningLab) -> dict[str, list[tuple[Any, ...]]]:
    """What a statement slipped into the password could change: roles, relations, privileges."""
    with lab.db() as conn:
        return {
            "roles": conn.execute(
                "SELECT rolname, rolsuper, rolcreaterole, rolcanlogin, rolconnlimit FROM pg_roles ORDER BY 1"
            ).fetchall(),
            # day partitions (and their indexes) come and go with the portal's retention rounds
            "relations": conn.execute(
                "SELECT relname, relkind, relacl::text FROM pg_class"
                " WHERE relnamespace = 'public'::regnamespace AND relname !~ '_p[0-9]{8}' ORDER BY 1"
            ).fetchall(),
            "database": conn.execute("SELECT datname, datacl::text FROM pg_database ORDER BY 1").fetchall(),
        }


def assert_only_the_password_changed(
    lab: RunningLab, password: str, before: dict[str, list[tuple[Any, ...]]]
) -> None:
    """The migrations took `password` for the role, kept it out of every output, changed nothing else."""
    result = migrate(lab, {**lab.config.service_env(), "GRAFANA_DB_PASSWORD": password})
    assert result.returncode == 0, result.stderr
    assert password not in result.stdout + result.stderr
    with grafana_db(lab, password) as conn:
        conn.execute("SELECT count(*) FROM readings")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        grafana_db(lab).close()  # the lab's own password no longer works
    assert database_state(lab) == before
    with lab.db() as conn:
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (ROLE,)).fetchone()
    assert stored is not None and str(stored[0]).startswith("SCRAM-SHA-256$"), "a verifier, never the text"
    log = lab.config.logs_dir / "db.log"
    assert password not in log.read_text(encoding="utf-8", errors="replace"), f"{log} holds the password"


@pytest.mark.integration
@pytest.mark.usefixtures("restore_password")
def test_a_changed_password_holds_from_the_next_migration_run(lab: RunningLab) -> None:
    before = database_state(lab)
    assert_only_the_password_changed(lab, envfile.new_secret(), before)
    assert_only_the_password_changed(lab, f"another-{uuid.uuid4().hex}", before)


@pytest.mark.integration
@pytest.mark.usefixtures("restore_password")
def test_a_hostile_password_is_taken_literally_and_injects_nothing(lab: RunningLab) -> None:
    assert_only_the_password_changed(lab, HOSTILE_PASSWORD, database_state(lab))


@pytest.mark.integration
def test_without_a_password_the_migrations_leave_the_role_alone(lab: RunningLab, tmp_path: Path) -> None:
    env = {name: value for name, value in lab.config.service_env().items() if name != "GRAFANA_DB_PASSWORD"}
    before = database_state(lab)
    # elsewhere than the checkout, whose own .env would provide the variable
    result = migrate(lab, env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert database_state(lab) == before
    with grafana_db(lab):
        pass
