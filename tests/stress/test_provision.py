"""``stress provision`` / ``deprovision`` and ``stress run --target lab``, against the lab's real broker."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from stress.provision import lab as provisioning
from stress.provision.dynsec import DynamicSecurity
from stress.provision.lab import LabAdmin, read_credentials
from tests.conftest import RunningLab
from tests.mqtt_helpers import connect, granted_qos

pytestmark = pytest.mark.integration


def stress(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stress", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        input=stdin,
    )


def prefix() -> str:
    """A device prefix no other test uses (the session's lab is shared)."""
    return f"p{uuid.uuid4().hex[:6]}-"


def provision(
    lab: RunningLab, credentials: Path, devices: int, name: str
) -> subprocess.CompletedProcess[str]:
    env_file = str(lab.config.env_file)
    return stress(
        "provision",
        "--env-file",
        env_file,
        "--credentials",
        str(credentials),
        "--devices",
        str(devices),
        "--prefix",
        name,
    )


def accounts(lab: RunningLab, name: str) -> list[str]:
    admin = LabAdmin.from_env(lab.config.env_file, "127.0.0.1", None)
    return asyncio.run(provisioning.provisioned(admin, name))


def run_on_lab(lab: RunningLab, out: Path, *flags: str) -> dict[str, Any]:
    """``stress run --target lab`` for 2 s at 0.5 s; returns its summary."""
    env_file = str(lab.config.env_file)
    common = ["--interval", "0.5", "--duration", "2", "--quiet", "--out", str(out)]
    run = stress("run", "--target", "lab", "--env-file", env_file, *common, *flags)
    assert run.returncode == 0, run.stderr
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


def logs_in(lab: RunningLab, username: str, password: str) -> bool:
    client = lab.mqtt_client(username, password)
    reason = connect(client, lab.port("MQTT_PORT"))
    if not reason.is_failure:
        client.disconnect()
    client.loop_stop()
    return not reason.is_failure


def test_each_device_gets_an_account_and_the_fleet_runs_on_them(lab: RunningLab, tmp_path: Path) -> None:
    name, credentials = prefix(), tmp_path / "devices.csv"
    result = provision(lab, credentials, 12, name)
    assert result.returncode == 0, result.stderr
    assert "12 created, 0 already there" in result.stdout
    assert "provisioning [" in result.stderr  # the progress bar
    passwords = read_credentials(credentials)
    assert sorted(passwords) == [f"{name}{n:05d}" for n in range(1, 13)]
    assert len(set(passwords.values())) == 12
    assert credentials.stat().st_mode & 0o777 == 0o600
    assert accounts(lab, name) == sorted(passwords)
    summary = run_on_lab(
        lab,
        tmp_path / "run",
        "--credentials",
        str(credentials),
        "--devices",
        "12",
        "--prefix",
        name,
        "--qos",
        "1",
    )
    assert summary["connections_peak"] == 12
    assert summary["sent"] == summary["acked"] == 12 * 4 * 3
    assert summary["failed"] == 0
    assert summary["observed"] == summary["sampled"] > 0  # the fleet account watched them


def test_a_provisioned_device_reaches_only_its_own_topics(lab: RunningLab, tmp_path: Path) -> None:
    name, credentials = prefix(), tmp_path / "devices.csv"
    assert provision(lab, credentials, 2, name).returncode == 0
    first, second = sorted(read_credentials(credentials).items())
    root = lab.env["TOPIC_ROOT"]
    codes = granted_qos(
        lab.mqtt_client(*first),
        lab.port("MQTT_PORT"),
        [f"{root}/room-01/{first[0]}/set/#", f"{root}/room-01/{second[0]}/set/#", f"{root}/#"],
    )
    assert codes == [1, 0x80, 0x80]


def test_provisioning_again_resumes_and_never_duplicates(lab: RunningLab, tmp_path: Path) -> None:
    name, credentials = prefix(), tmp_path / "devices.csv"
    assert provision(lab, credentials, 5, name).returncode == 0
    first = read_credentials(credentials)
    grown = provision(lab, credentials, 10, name)  # as if the first run had stopped half-way
    assert grown.returncode == 0, grown.stderr
    assert "5 created, 5 already there" in grown.stdout
    second = read_credentials(credentials)
    assert len(second) == 10
    assert {device: second[device] for device in first} == first  # the same passwords, reused
    again = provision(lab, credentials, 10, name)
    assert "0 created, 10 already there" in again.stdout
    assert read_credentials(credentials) == second
    assert accounts(lab, name) == sorted(second)
    assert all(logs_in(lab, device, password) for device, password in list(second.items())[:3])


def test_a_lost_credentials_file_is_made_true_again(lab: RunningLab, tmp_path: Path) -> None:
    name, credentials = prefix(), tmp_path / "devices.csv"
    assert provision(lab, credentials, 3, name).returncode == 0
    old = read_credentials(credentials)
    credentials.unlink()
    assert provision(lab, credentials, 3, name).returncode == 0
    new = read_credentials(credentials)
    assert set(new) == set(old)
    assert all(new[device] != old[device] for device in new)
    device = sorted(new)[0]
    assert logs_in(lab, device, new[device])
    assert not logs_in(lab, device, old[device])


def test_an_account_made_by_someone_else_is_never_taken_over(lab: RunningLab, tmp_path: Path) -> None:
    name = prefix()
    taken = f"{name}00001"

    async def create() -> None:
        admin = LabAdmin.from_env(lab.config.env_file, "127.0.0.1", None)
        plugin = await DynamicSecurity.open(admin.host, admin.port, admin.username, admin.password)
        try:
            answer = await plugin.send([{"command": "createClient", "username": taken, "password": "theirs"}])
        finally:
            plugin.close()
        assert "error" not in answer[0], answer

    asyncio.run(create())
    result = provision(lab, tmp_path / "devices.csv", 2, name)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"stress provision: error: the broker account '{taken}' exists and was not made by stress "
        "provision: choose another --prefix"
    )
    assert logs_in(lab, taken, "theirs")
    assert taken not in accounts(lab, name)  # and deprovision would leave it alone


def test_deprovision_looks_asks_and_deletes(lab: RunningLab, tmp_path: Path) -> None:
    name, credentials = prefix(), tmp_path / "devices.csv"
    assert provision(lab, credentials, 4, name).returncode == 0
    keep, keep_credentials = prefix(), tmp_path / "other.csv"
    assert provision(lab, keep_credentials, 1, keep).returncode == 0
    passwords = read_credentials(credentials)
    common = ["--env-file", str(lab.config.env_file), "--credentials", str(credentials), "--prefix", name]
    dry = stress("deprovision", *common, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"4 accounts match {name}<digits>" in dry.stdout
    assert "nothing deleted" in dry.stdout
    assert len(accounts(lab, name)) == 4
    unasked = stress("deprovision", *common, stdin="")  # not a terminal: it cannot ask
    assert unasked.returncode == 2
    assert unasked.stderr.strip().splitlines() == [
        "stress deprovision: error: not deleting without confirmation: "
        "pass --yes (or --dry-run to look first)"
    ]
    done = stress("deprovision", *common, "--yes")
    assert done.returncode == 0, done.stderr
    assert "4 accounts deleted" in done.stdout
    assert accounts(lab, name) == []
    assert read_credentials(credentials) == {}
    device = sorted(passwords)[0]
    assert not logs_in(lab, device, passwords[device])
    assert len(accounts(lab, keep)) == 1  # another prefix is untouched
    again = stress("deprovision", *common, "--yes")
    assert again.returncode == 0
    assert "no accounts made by stress provision match" in again.stdout


def test_the_lab_target_uses_the_fleet_account_from_env(lab: RunningLab, tmp_path: Path) -> None:
    summary = run_on_lab(lab, tmp_path / "run", "--devices", "5", "--prefix", prefix())
    assert (summary["connections_peak"], summary["failed"]) == (5, 0)
    assert summary["sent"] == 5 * 4 * 3
    assert summary["observed"] == summary["sampled"] == 5 * 4 * 3


HOSTILE = [
    (["--devices", "0"], 2, "--devices"),
    (["--devices", "many"], 2, "--devices"),
    (["--devices", "3", "--prefix", "a/b"], 2, "--prefix"),
    (["--devices", "3", "--batch", "0"], 2, "--batch"),
    (["--devices", "3", "--port", "99999"], 2, "--port"),
    (["--devices", "3", "--target", "nowhere"], 2, "--target"),
]


@pytest.mark.parametrize(("flags", "status", "named"), HOSTILE, ids=[" ".join(f) for f, _, _ in HOSTILE])
def test_hostile_provision_flags_give_one_line(
    tmp_path: Path, flags: list[str], status: int, named: str
) -> None:
    result = stress("provision", "--env-file", str(tmp_path / "none.env"), *flags)
    assert result.returncode == status
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]


def test_problems_with_the_lab_are_one_line_each(lab: RunningLab, tmp_path: Path) -> None:
    env_text = lab.config.env_file.read_text()
    wrong = tmp_path / "wrong.env"
    wrong.write_text(
        env_text.replace(f"MQTT_ADMIN_PASSWORD={lab.env['MQTT_ADMIN_PASSWORD']}", "MQTT_ADMIN_PASSWORD=nope")
    )
    not_admin = tmp_path / "not-admin.env"
    not_admin.write_text(
        env_text.replace(
            f"MQTT_ADMIN_USER={lab.env['MQTT_ADMIN_USER']}", f"MQTT_ADMIN_USER={lab.env['LAB_FLEET_USER']}"
        ).replace(
            f"MQTT_ADMIN_PASSWORD={lab.env['MQTT_ADMIN_PASSWORD']}",
            f"MQTT_ADMIN_PASSWORD={lab.env['LAB_FLEET_PASSWORD']}",
        )
    )
    garbage = tmp_path / "garbage.csv"
    garbage.write_text("this is not\x00 a credentials file\n")
    cases = [
        (["--env-file", str(wrong)], "check MQTT_ADMIN_USER and MQTT_ADMIN_PASSWORD"),
        (["--env-file", str(not_admin)], "may not use the dynamic security plugin"),
        (["--env-file", str(tmp_path / "missing.env")], "no lab settings at"),
        (
            ["--env-file", str(lab.config.env_file), "--port", "1"],
            "cannot log in to the broker at 127.0.0.1:1",
        ),
        (
            ["--env-file", str(lab.config.env_file), "--credentials", str(garbage)],
            "is not a device,password CSV",
        ),
    ]
    for flags, said in cases:
        result = stress("provision", "--devices", "2", "--prefix", prefix(), *flags)
        lines = result.stderr.strip().splitlines()
        assert result.returncode in (1, 2), (flags, result.stderr)
        assert said in lines[-1], (flags, result.stderr)
        assert "Traceback" not in result.stderr
    assert garbage.read_text() == "this is not\x00 a credentials file\n"  # never overwritten


def test_the_default_device_role_is_the_labs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from labctl import broker  # noqa: PLC0415

    from_checkout = provisioning.device_acls("dev00001", "office")
    assert from_checkout == broker.device_role("dev00001", "office")["acls"]
    monkeypatch.setattr(broker, "TEMPLATE_DIR", tmp_path)  # stress installed without the checkout
    assert provisioning.device_acls("dev00001", "office") == from_checkout


def test_progress_lines_when_not_on_a_terminal() -> None:
    import io  # noqa: PLC0415

    from stress.cli.progress import Progress  # noqa: PLC0415

    stream = io.StringIO()
    with Progress(200, "provisioning", stream) as bar:
        for _ in range(20):
            bar.advance(10)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("provisioning [#.....") and "10/200 (5%)" in lines[0]
    assert lines[-1].startswith("provisioning [######") and "200/200 (100%)" in lines[-1]
    assert len(lines) == 11  # the first step, then every tenth
    silent = io.StringIO()
    with Progress(200, "provisioning", silent):
        pass  # failed before any work: no bar at all
    assert silent.getvalue() == ""


def test_a_variable_for_one_command_does_not_break_another(tmp_path: Path) -> None:
    # STRESS_TARGET=mqtt is right for `stress run` and wrong for `stress provision`
    env = {**os.environ, "STRESS_TARGET": "mqtt", "STRESS_BATCH": "many"}
    run = subprocess.run(
        [sys.executable, "-m", "stress", "run", "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "[STRESS_TARGET]" in run.stdout
    provision = subprocess.run(
        [sys.executable, "-m", "stress", "provision", "--devices", "2", "--env-file", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert provision.returncode == 2
    assert "STRESS_TARGET='mqtt'" in provision.stderr or "STRESS_BATCH='many'" in provision.stderr
