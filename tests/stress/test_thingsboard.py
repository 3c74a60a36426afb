"""``stress`` against ThingsBoard's APIs, played by the emulator under ``tests/tbemu``.

Provisioning (interrupted and resumed, a token expiring midway), deprovisioning, ``stress check``,
and runs over MQTT, gateways and HTTP: every value arrives, RPC is answered, an unknown token,
a session taken over and rate limits are named as such, and bad input is one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from stress.thingsboard import TbError
from stress.thingsboard import provision as tb_provision
from stress.thingsboard.rest import TbClient
from tests.tbemu.emulator import Emulator

pytestmark = pytest.mark.integration

USER, PASSWORD = "tenant@thingsboard.org", "tenant-secret"


@pytest.fixture
def tb() -> Iterator[Emulator]:
    with Emulator(username=USER, password=PASSWORD, token_ttl_s=9000.0) as emulator:
        yield emulator


def tb_env(tb: Emulator | None) -> dict[str, str]:
    """This process's environment without TB_* and STRESS_* settings (but where runs listen
    for control), and the emulator's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TB_", "STRESS_")) or k == "STRESS_CONTROL_DIR"
    }
    if tb is not None:
        env.update(
            TB_URL=tb.url,
            TB_USERNAME=USER,
            TB_PASSWORD=PASSWORD,
            TB_MQTT_HOST=tb.mqtt_host,
            TB_MQTT_PORT=str(tb.mqtt_port),
        )
    return env


def stress(
    tb: Emulator | None, *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m stress ARGS`` with the emulator's settings in ``TB_*`` variables."""
    env = tb_env(tb)
    return subprocess.run(
        [sys.executable, "-m", "stress", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input=stdin,
        env=env,
    )


def files(tmp_path: Path) -> list[str]:
    return [
        "--tokens",
        str(tmp_path / "tokens.json"),
        "--table",
        str(tmp_path / "devices.csv"),
        "--env-file",
        str(tmp_path / "none.env"),
    ]


def provision(tb: Emulator, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return stress(tb, "provision", "--target", "thingsboard", *files(tmp_path), *args)


def run_args(tmp_path: Path, folder: Path) -> list[str]:
    """The flags every run here shares: the test's tokens, no .env, quiet, ``folder``."""
    tokens, env_file = str(tmp_path / "tokens.json"), str(tmp_path / "none.env")
    return [
        "run",
        "--target",
        "thingsboard",
        "--tokens",
        tokens,
        "--env-file",
        env_file,
        "--quiet",
        "--out",
        str(folder),
    ]


def run(tb: Emulator, tmp_path: Path, *args: str, out: str = "run") -> dict[str, Any]:
    """``stress run --target thingsboard``; its summary."""
    folder = tmp_path / out
    done = stress(tb, *run_args(tmp_path, folder), *args)
    assert done.returncode in (0, 1), done.stderr
    summary: dict[str, Any] = json.loads((folder / "summary.json").read_text())
    summary["_stderr"] = done.stderr
    return summary


def one_error(stderr: str) -> bool:
    """Whether ``stderr`` says what went wrong in one line (besides the progress bar's lines)."""
    lines = [line for line in stderr.splitlines() if not line.startswith(("provisioning [", "deleting ["))]
    return len(lines) == 1 and "Traceback" not in stderr


def ours(tb: Emulator, prefix: str) -> list[str]:
    return sorted(d.name for d in tb.devices() if d.name.startswith(prefix))


# ---------------------------------------------------------------------------- provisioning


def test_provision_creates_devices_tokens_and_attributes(tb: Emulator, tmp_path: Path) -> None:
    done = provision(tb, tmp_path, "--devices", "12", "--prefix", "th", "--gateways", "2", "--groups", "3")
    assert done.returncode == 0, done.stderr
    names = [f"th{i:05d}" for i in range(1, 13)]
    assert ours(tb, "th") == sorted([*names, "th-gateway-01", "th-gateway-02"])
    tokens = json.loads((tmp_path / "tokens.json").read_text())
    for made in tb.devices():
        assert tokens[made.name] == made.token
    assert (tmp_path / "tokens.json").stat().st_mode & 0o077 == 0
    device = tb.device("th00005")
    assert device is not None
    assert device.server_attributes["stressIndex"] == 5
    assert device.server_attributes["stressGroup"] == 2  # dealt in turn: groups 1, 2, 3, 1, 2
    assert device.server_attributes["stressBatch"] == "th"
    gateway = tb.device("th-gateway-01")
    assert gateway is not None and gateway.gateway and not device.gateway
    table = (tmp_path / "devices.csv").read_text().splitlines()
    assert table[0] == "name,id,token,profile,gateway"
    assert len(table) == 15
    assert "12 devices and 2 gateways" in done.stdout

    again = provision(tb, tmp_path, "--devices", "12", "--prefix", "th", "--gateways", "2")
    assert again.returncode == 0, again.stderr
    assert "0 created, 14 already there" in again.stdout
    assert len(ours(tb, "th")) == 14


def test_provision_interrupted_and_resumed_leaves_exactly_n(tb: Emulator, tmp_path: Path) -> None:
    # The server fails every creation after a while; with one retry the run gives up midway
    created: list[str] = []

    def break_midway() -> None:
        while len(tb.devices()) < 15:
            time.sleep(0.005)
        tb.fail_next(10_000, 500, '{"status":500,"message":"boom","errorCode":2}', path="/api/device")

    breaker = threading.Thread(target=break_midway, daemon=True)
    breaker.start()
    first = provision(tb, tmp_path, "--devices", "60", "--prefix", "ir", "--retries", "1", "--workers", "4")
    breaker.join(timeout=10)
    assert first.returncode == 1
    assert one_error(first.stderr) and "HTTP 500" in first.stderr, first.stderr
    created = ours(tb, "ir")
    assert 15 <= len(created) < 60
    written = json.loads((tmp_path / "tokens.json").read_text())
    assert set(written) <= set(created)  # what the file says exists, exists

    tb.fail_next(0, 500)
    second = provision(tb, tmp_path, "--devices", "60", "--prefix", "ir")
    assert second.returncode == 0, second.stderr
    assert ours(tb, "ir") == [f"ir{i:05d}" for i in range(1, 61)]
    tokens = json.loads((tmp_path / "tokens.json").read_text())
    assert {d.name: d.token for d in tb.devices() if d.name.startswith("ir")} == tokens


def test_token_expiry_during_provisioning_is_refreshed(tb: Emulator, tmp_path: Path) -> None:
    client = TbClient(tb.url, USER, PASSWORD, retries=1)
    client.login()
    ledger = tb_provision.Ledger(tmp_path / "tokens.json", tmp_path / "devices.csv")
    wanted = [tb_provision.Wanted(f"ex{i:05d}", i) for i in range(40)]
    count = 0

    def advance(n: int) -> None:
        nonlocal count
        count += n
        if count in (10, 25):
            tb.expire_tokens()

    outcome = tb_provision.provision(
        client, wanted, ledger, profile=None, batch="b", groups=1, workers=4, advance=advance
    )
    assert len(outcome.created) == 40
    assert len(ours(tb, "ex")) == 40
    assert client.stats["refreshes"] >= 2
    assert tb.stats["refreshes"] >= 2


def test_provision_with_a_named_profile(tb: Emulator, tmp_path: Path) -> None:
    done = provision(tb, tmp_path, "--devices", "3", "--prefix", "pf", "--profile", "thermostat-profile")
    assert done.returncode == 0, done.stderr
    assert {d.type for d in tb.devices() if d.name.startswith("pf")} == {"thermostat-profile"}
    missing = provision(tb, tmp_path, "--devices", "3", "--prefix", "pf", "--profile", "no-such-profile")
    assert missing.returncode == 1
    assert "no device profile named 'no-such-profile'" in missing.stderr
    assert one_error(missing.stderr), missing.stderr


def test_deprovision_deletes_only_what_provision_made(tb: Emulator, tmp_path: Path) -> None:
    assert provision(tb, tmp_path, "--devices", "5", "--prefix", "dp", "--gateways", "1").returncode == 0
    assert provision(tb, tmp_path, "--devices", "2", "--prefix", "dpx").returncode == 0
    client = TbClient(tb.url, USER, PASSWORD)
    client.create_device("dp-kitchen", token=None, profile_id=None)

    dry = stress(
        tb, "deprovision", "--target", "thingsboard", *files(tmp_path), "--prefix", "dp", "--dry-run"
    )
    assert dry.returncode == 0, dry.stderr
    assert "6 devices" in dry.stdout and "nothing deleted" in dry.stdout
    assert len(ours(tb, "dp")) == 9

    unasked = stress(
        tb, "deprovision", "--target", "thingsboard", *files(tmp_path), "--prefix", "dp", stdin=""
    )
    assert unasked.returncode == 2 and "--yes" in unasked.stderr

    done = stress(tb, "deprovision", "--target", "thingsboard", *files(tmp_path), "--prefix", "dp", "--yes")
    assert done.returncode == 0, done.stderr
    assert ours(tb, "dp") == ["dp-kitchen", "dpx00001", "dpx00002"]
    tokens = json.loads((tmp_path / "tokens.json").read_text())
    assert sorted(tokens) == ["dpx00001", "dpx00002"]


def test_deprovision_pages_through_many_devices(tb: Emulator, tmp_path: Path) -> None:
    assert provision(tb, tmp_path, "--devices", "230", "--prefix", "pg", "--workers", "16").returncode == 0
    done = stress(tb, "deprovision", "--target", "thingsboard", *files(tmp_path), "--prefix", "pg", "--yes")
    assert done.returncode == 0, done.stderr
    assert "230 devices deleted" in done.stdout
    assert ours(tb, "pg") == []
    pages = [
        path for method, path in tb.requests if method == "GET" and path.startswith("/api/tenant/devices")
    ]
    assert len(pages) >= 3


# ---------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    "case",
    [
        (None, "htp:/nowhere", PASSWORD, "is not a ThingsBoard URL"),
        (None, "http://127.0.0.1:1", PASSWORD, "cannot reach ThingsBoard"),
        (None, "", "wrong", "wrong user name or password"),
        ((1, 200, "<html><body>proxy</body></html>"), "", PASSWORD, "not JSON"),
        ((50, 500, '{"status":500,"message":"Internal error","errorCode":2}'), "", PASSWORD, "HTTP 500"),
        ((50, 503, "<html>Service Unavailable</html>"), "", PASSWORD, "HTTP 503"),
    ],
)
def test_hostile_servers_give_one_line(
    tb: Emulator, tmp_path: Path, case: tuple[tuple[int, int, str] | None, str, str, str]
) -> None:
    setup, url, password, expected = case
    if setup is not None:
        tb.fail_next(*setup)
    flags = ["--tb-password", password, "--retries", "1"]
    if url:
        flags += ["--tb-url", url]
    done = provision(tb, tmp_path, "--devices", "2", "--prefix", "hx", "--timeout", "2", *flags)
    assert done.returncode == 1
    assert expected in done.stderr, done.stderr
    assert one_error(done.stderr), done.stderr


def test_missing_credentials_and_bad_flags(tb: Emulator, tmp_path: Path) -> None:
    env_less = stress(None, "provision", "--target", "thingsboard", *files(tmp_path), "--devices", "2")
    assert env_less.returncode == 1 and "TB_USERNAME" in env_less.stderr
    for flags, expected in [
        (["--gateways", "-1"], "must be 0 or more"),
        (["--workers", "0"], "must be 1 or more"),
        (["--prefix", "a/b"], "--prefix"),
    ]:
        done = provision(tb, tmp_path, "--devices", "2", *flags)
        assert done.returncode == 2, (flags, done.stderr)
        assert expected in done.stderr and done.stderr.count("\n") == 1
    (tmp_path / "tokens.json").write_text("{not json")
    broken = provision(tb, tmp_path, "--devices", "2", "--prefix", "bk")
    assert broken.returncode == 2 and "not a tokens file" in broken.stderr


# ---------------------------------------------------------------------------- check


def test_check_signs_in_lists_devices_and_connects(tb: Emulator, tmp_path: Path) -> None:
    assert provision(tb, tmp_path, "--devices", "3", "--prefix", "ck").returncode == 0
    common = [
        "check",
        "--target",
        "thingsboard",
        "--tokens",
        str(tmp_path / "tokens.json"),
        "--prefix",
        "ck",
        "--devices",
        "3",
    ]
    done = stress(tb, *common, "--env-file", str(tmp_path / "none.env"))
    assert done.returncode == 0, done.stderr
    assert "signed in" in done.stdout and "3 devices" in done.stdout and "accepted ck00001" in done.stdout
    wrong = stress(tb, *common, "--tb-password", "nope", "--env-file", str(tmp_path / "none.env"))
    assert wrong.returncode == 1 and "wrong user name or password" in wrong.stderr
    (tmp_path / "bad.json").write_text(json.dumps({"ck00001": "not-a-token"}))
    bad = stress(
        tb,
        "check",
        "--target",
        "thingsboard",
        "--tokens",
        str(tmp_path / "bad.json"),
        "--prefix",
        "ck",
        "--devices",
        "1",
    )
    assert bad.returncode == 1 and "connack-unknown-token" in bad.stderr, bad.stderr


# ---------------------------------------------------------------------------- runs


def test_mqtt_run_delivers_every_value_and_names_an_unknown_token(tb: Emulator, tmp_path: Path) -> None:
    assert provision(tb, tmp_path, "--devices", "6", "--prefix", "mq").returncode == 0
    tokens = json.loads((tmp_path / "tokens.json").read_text())
    tokens["mq00006"] = "revoked-token-0000000"
    (tmp_path / "tokens.json").write_text(json.dumps(tokens))
    summary = run(
        tb, tmp_path, "--devices", "6", "--prefix", "mq", "--interval", "0.5", "--duration", "3", "--qos", "1"
    )
    assert summary["errors_by_reason"].get("connack-unknown-token", 0) >= 1
    stored = [tb.telemetry(f"mq{i:05d}") for i in range(1, 6)]
    assert sum(len(rows) for rows in stored) == summary["acked"] > 0
    ts, values = stored[0][0]
    assert set(values) == {"temperature", "humidity", "setpoint"}
    assert isinstance(ts, int) and abs(ts / 1000 - time.time()) < 60
    assert tb.telemetry("mq00006") == []


def test_gateway_run_delivers_every_value(tb: Emulator, tmp_path: Path) -> None:
    assert provision(tb, tmp_path, "--devices", "30", "--prefix", "gw", "--gateways", "3").returncode == 0
    summary = run(
        tb,
        tmp_path,
        "--devices",
        "30",
        "--prefix",
        "gw",
        "--transport",
        "gateway",
        "--gateways",
        "3",
        "--interval",
        "0.5",
        "--duration",
        "3",
        "--qos",
        "1",
    )
    assert summary["acked"] == summary["sent"] > 0
    assert not summary["errors_by_reason"], summary["errors_by_reason"]
    stored = sum(len(tb.telemetry(f"gw{i:05d}")) for i in range(1, 31))
    assert stored == summary["acked"]
    assert all(tb.telemetry(f"gw{i:05d}") for i in range(1, 31))
    assert summary["connections_peak"] == 30  # devices, carried by three connections
    check = stress(
        tb,
        "check",
        "--target",
        "thingsboard",
        "--tokens",
        str(tmp_path / "tokens.json"),
        "--prefix",
        "gw",
        "--devices",
        "30",
        "--transport",
        "gateway",
        "--gateways",
        "3",
        "--env-file",
        str(tmp_path / "none.env"),
    )
    assert check.returncode == 0, check.stderr
    assert f"as {tb.device('gw-gateway-01').token!r}" in check.stdout  # type: ignore[union-attr]


def test_http_run_delivers_and_reports_rate_limits(tb: Emulator, tmp_path: Path) -> None:
    assert provision(tb, tmp_path, "--devices", "4", "--prefix", "ht").returncode == 0
    summary = run(
        tb,
        tmp_path,
        "--devices",
        "4",
        "--prefix",
        "ht",
        "--transport",
        "http",
        "--qos",
        "1",
        "--interval",
        "0.5",
        "--duration",
        "2",
    )
    assert summary["acked"] == sum(len(tb.telemetry(f"ht{i:05d}")) for i in range(1, 5)) > 0
    assert not summary["errors_by_reason"]
    tb.set_rate_limit("3:1")
    limited = run(
        tb,
        tmp_path,
        "--devices",
        "2",
        "--prefix",
        "ht",
        "--transport",
        "http",
        "--qos",
        "1",
        "--interval",
        "0.05",
        "--duration",
        "2",
        out="limited",
    )
    assert limited["errors_by_reason"].get("rate-limited", 0) > 0
    assert limited["acked"] > 0


def test_mqtt_rate_limit_is_reported_as_such(tb: Emulator, tmp_path: Path) -> None:
    assert provision(tb, tmp_path, "--devices", "2", "--prefix", "rl").returncode == 0
    tb.set_rate_limit("5:1")
    summary = run(
        tb,
        tmp_path,
        "--devices",
        "2",
        "--prefix",
        "rl",
        "--interval",
        "0.05",
        "--duration",
        "2",
        "--qos",
        "1",
        "--protocol",
        "5",
    )
    assert summary["errors_by_reason"].get("rate-limited", 0) > 0, summary["errors_by_reason"]


def start_run(tb: Emulator, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    """``stress run --target thingsboard`` in the background, into ``tmp_path/live``."""
    return subprocess.Popen(
        [sys.executable, "-m", "stress", *run_args(tmp_path, tmp_path / "live"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=tb_env(tb),
    )


def wait_for(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("transport", ["mqtt", "gateway"])
def test_rpc_is_answered_by_the_behaviour(tb: Emulator, tmp_path: Path, transport: str) -> None:
    gateways = ["--gateways", "1"] if transport == "gateway" else []
    assert provision(tb, tmp_path, "--devices", "2", "--prefix", "rp", *gateways).returncode == 0
    process = start_run(
        tb,
        tmp_path,
        "--devices",
        "2",
        "--prefix",
        "rp",
        "--transport",
        transport,
        *gateways,
        "--interval",
        "0.5",
        "--duration",
        "8",
    )
    try:
        wait_for(lambda: tb.connected("rp00001") and tb.telemetry("rp00001"))
        answer = tb.rpc("rp00001", "setSetpoint", 26.5, timeout_s=5.0)
        assert answer == {"ok": True, "obeyed": {"setpoint": True}}
        several = tb.rpc("rp00002", "set", {"setpoint": 18, "colour": "red"}, timeout_s=5.0)
        assert several == {"ok": False, "obeyed": {"setpoint": True, "colour": False}}
        unknown = tb.rpc("rp00001", "reboot", {}, timeout_s=5.0)
        assert unknown is not None and unknown["ok"] is False and "unknown method" in unknown["error"]
        # The thermostat heads for its new setpoint: its published setpoint follows the command
        wait_for(lambda: tb.telemetry("rp00001")[-1][1]["setpoint"] == 26.5)
    finally:
        process.terminate()
        process.communicate(timeout=30)


@pytest.mark.parametrize(("protocol", "named"), [("5", "session-taken-over"), ("3.1.1", "closed-repeatedly")])
def test_a_token_used_twice_is_classified_and_not_retried_forever(
    tb: Emulator, tmp_path: Path, protocol: str, named: str
) -> None:
    assert provision(tb, tmp_path, "--devices", "1", "--prefix", "to").returncode == 0
    token = json.loads((tmp_path / "tokens.json").read_text())["to00001"]
    rival = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="rival")
    rival.username_pw_set(token)
    rival.reconnect_delay_set(1, 1)  # another client with the device's token, always coming back
    rival.connect(tb.mqtt_host, tb.mqtt_port)
    rival.loop_start()
    try:
        summary = run(
            tb,
            tmp_path,
            "--devices",
            "1",
            "--prefix",
            "to",
            "--interval",
            "0.5",
            "--duration",
            "8",
            "--protocol",
            protocol,
            "--reconnect-min",
            "0.2",
            "--reconnect-max",
            "0.5",
        )
    finally:
        rival.loop_stop()
        rival.disconnect()
    assert summary["errors_by_reason"].get(named, 0) >= 1, summary["errors_by_reason"]
    assert tb.sessions_taken_over >= 5
    # gave up after five short sessions, rather than connecting every half second for 8 s
    assert summary["latency_ms"]["connect"]["count"] <= 6


def test_active_list_deactivates_and_reactivates_devices_live(tb: Emulator, tmp_path: Path) -> None:
    assert provision(tb, tmp_path, "--devices", "4", "--prefix", "ac").returncode == 0
    active = tmp_path / "active.txt"
    active.write_text("# who takes part\nac00001\nac0000[2-3]\n")
    process = start_run(
        tb,
        tmp_path,
        "--devices",
        "4",
        "--prefix",
        "ac",
        "--interval",
        "0.3",
        "--duration",
        "8",
        "--active",
        str(active),
    )
    try:
        wait_for(lambda: tb.connected("ac00003") and tb.telemetry("ac00003"))
        assert not tb.connected("ac00004") and tb.telemetry("ac00004") == []
        active.write_text("ac00004\n")
        wait_for(lambda: tb.connected("ac00004") and tb.telemetry("ac00004"))
        wait_for(lambda: not tb.connected("ac00001"))
        silent_since = len(tb.telemetry("ac00001"))
        time.sleep(1.0)
        assert len(tb.telemetry("ac00001")) == silent_since
    finally:
        process.terminate()
        _out, err = process.communicate(timeout=30)
    summary = json.loads((tmp_path / "live" / "summary.json").read_text())
    assert "not-connected" not in summary["errors_by_reason"], (summary["errors_by_reason"], err)


def test_run_flags_for_thingsboard_are_checked(tb: Emulator, tmp_path: Path) -> None:
    assert provision(tb, tmp_path, "--devices", "2", "--prefix", "fl").returncode == 0
    base = [
        "run",
        "--target",
        "thingsboard",
        "--tokens",
        str(tmp_path / "tokens.json"),
        "--prefix",
        "fl",
        "--devices",
        "2",
        "--duration",
        "1",
    ]
    for flags, expected in [
        (["--transport", "gateway"], "--gateways N"),
        (["--gateways", "2"], "--gateways is for --transport gateway"),
        (["--transport", "http"], "--qos 1"),
        (["--transport", "http", "--qos", "1", "--tb-url", "ftp://x"], "is not a ThingsBoard URL"),
        (["--topic", "a/b"], "not for --target thingsboard"),
        (["--devices", "3"], "fl00003 has no access token"),
        (["--tokens", str(tmp_path / "missing.json")], "provision the fleet first"),
        (["--transport", "carrier-pigeon"], "invalid choice"),
    ]:
        done = stress(tb, *base, *flags)
        assert done.returncode == 2, (flags, done.stderr)
        assert expected in done.stderr, (flags, done.stderr)
        assert done.stderr.count("\n") == 1, done.stderr
    plain = stress(None, "run", "--target", "mqtt", "--transport", "gateway", "--duration", "1")
    assert plain.returncode == 2 and "for --target thingsboard" in plain.stderr


# ---------------------------------------------------------------------------- the REST client


def test_client_retries_busy_answers_and_honours_retry_after(tb: Emulator) -> None:
    client = TbClient(tb.url, USER, PASSWORD, retries=3, backoff=0.01)
    tb.fail_next(
        2, 429, '{"status":429,"message":"Too many requests","errorCode":33}', path="/api/auth/login"
    )
    client.login()
    assert client.stats["retries"] == 2 and client.stats["logins"] == 1
    tb.fail_next(4, 502, "<html>Bad Gateway</html>", path="/api/tenant")
    with pytest.raises(TbError, match="HTTP 502"):
        client.device_by_name("anything")


def test_client_refreshes_a_token_before_it_expires() -> None:
    with Emulator(username=USER, password=PASSWORD, token_ttl_s=4.0) as short_lived:
        client = TbClient(short_lived.url, USER, PASSWORD)
        client.login()
        assert client.device_by_name("nothing") is None
        assert client.stats["refreshes"] == 0  # renewed when half its life is left (a minute, for hours)
        time.sleep(2.5)
        assert client.device_by_name("nothing") is None
        assert client.stats["refreshes"] == short_lived.stats["refreshes"] == 1
        assert short_lived.stats["expired_rejected"] == 0  # renewed before the server refused it


def test_growing_past_the_provisioned_fleet_is_an_error_not_a_stall(
    tb: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert provision(tb, tmp_path, "--devices", "2", "--prefix", "sc").returncode == 0
    control = tmp_path / "control"
    control.mkdir(mode=0o700)
    monkeypatch.setenv("STRESS_CONTROL_DIR", str(control))
    process = start_run(
        tb, tmp_path, "--devices", "2", "--prefix", "sc", "--interval", "0.5", "--duration", "6"
    )
    try:
        wait_for(lambda: tb.telemetry("sc00002"))
        grown = subprocess.run(
            [sys.executable, "-m", "stress", "scale", "3"],
            capture_output=True,
            text=True,
            env=tb_env(tb),
            timeout=30,
            check=False,
        )
        assert grown.returncode == 0, grown.stderr
        count = len(tb.telemetry("sc00001"))
        wait_for(lambda: len(tb.telemetry("sc00001")) > count + 2)  # the others go on
    finally:
        _out, err = process.communicate(timeout=30)
    summary = json.loads((tmp_path / "live" / "summary.json").read_text())
    assert summary["errors_by_reason"].get("device-setup") == 1, (summary["errors_by_reason"], err)
