"""The README's commands, run as written against a lab of their own.

README.md marks the shell blocks meant for a running lab with a comment line right above the
fence, which a reader of the rendered page never sees:

    <!-- runs against a lab: tests/install/test_readme.py -->   commands, run with bash -e -o pipefail
    <!-- lines of .env: tests/install/test_readme.py -->        settings, appended to the lab's .env

Every marked block runs, in README order, in a folder laid out as the checkout is for a user:
`.env` (a copy of the test lab's, where the settings block goes), `.venv` (the environment
`./lab up` builds, fixture `lab_env`), `./lab` (the checkout's launcher, given the test lab's env
file and data folder) and `data/`. The lab's portal and migrations run from that environment
too; the ThingsBoard commands go to the emulator in `tests/tbemu/`. As in one terminal, what a
block exports stays for the blocks after it (the database query follows the first value's
`set -a; . ./.env; set +a`). A block passes when it exits 0 without a traceback; most also check
what they promise (the value in the database, the users and tokens, the steered run paused and
stopped, the run folders, the accounts, the viewers' figures, the emulator's devices).

The test changes the blocks in these ways and no other (each must still match a block):

* `--duration N` becomes `--duration 3`, and runs that give no duration get `STRESS_DURATION=3`
  (the variable the README documents), so each run takes seconds, not minutes.
* The portal's default address, `127.0.0.1:5000`, becomes the test lab's (its `PORTAL_PORT`: the
  test lab runs beside any other).
* `TOKEN=...` becomes `TOKEN=$(./lab users token create "$PORTAL_ADMIN_USER")`, as its comment says.
* `./lab users add alice` gets `--password-stdin` (its comment names it) and a password on stdin.
* `token revoke 3` becomes `token revoke 1`: in a fresh lab the token its block creates is the first.
* `data/runs/<run-id>` becomes `data/runs/$(ls data/runs | tail -n 1)`, the newest run.
* In the ThingsBoard settings, `http://localhost:8080` becomes the emulator's address and
  `TB_MQTT_PORT=1883` its MQTT port; the emulator takes the README's account.

And around the blocks: `STRESS_CONTROL_DIR` is the folder's own, so the steering commands find
this test's run and no other; before the steering block the test starts the run it steers (the
README says a run must be in progress) and waits for its end after it; a block's background
jobs (`... &`) are waited for, their exit status counting, and anything left is killed.

Every shell block of README.md is either marked or listed in `NOT_FOR_A_LAB` with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from labctl.config import ROOT, LabConfig
from labctl.lab import Lab
from tests.conftest import RunningLab
from tests.install.conftest import PythonEnv
from tests.tbemu.emulator import Emulator

README = ROOT / "README.md"
RUNS = "<!-- runs against a lab: tests/install/test_readme.py -->"
ENV_LINES = "<!-- lines of .env: tests/install/test_readme.py -->"

#: Shell blocks not meant for a running lab, by how their first line starts, and why.
NOT_FOR_A_LAB = {
    "./lab up": "starts the lab and runs the whole suite: the test's lab is its own, and the suite runs this",
    "./lab env": "Docker Compose: no Docker engine runs on the test machine",
    "mkdir -p ~/.mytb-data": "ThingsBoard's own server, in Docker, cannot run here; the emulator stands in",
}

#: How long each run and viewer session lasts here (`--duration N`, `STRESS_DURATION`).
SECONDS = "3"
BLOCK_TIMEOUT_S = 120
TB_USER, TB_PASSWORD = "tenant@thingsboard.org", "tenant"
#: The run the steering block acts on (its devices are dev00001..., as the block's are).
STEERED_RUN = ".venv/bin/stress run --target lab --devices 50 --duration 60 --quiet"


@dataclass(frozen=True)
class Block:
    """A fenced block of README.md: where it opens, its language, text and marker."""

    line: int
    language: str
    text: str
    marker: str | None


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block, its text without the fence's indentation (blocks in list items)."""
    blocks = []
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        opening = re.fullmatch(r"( *)```([\w-]*)\s*", lines[number])
        if opening is None:
            number += 1
            continue
        indent, language = opening.groups()
        end = number + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        above = lines[number - 1].strip() if number else ""
        blocks.append(
            Block(
                line=number + 1,
                language=language,
                text="\n".join(line.removeprefix(indent) for line in lines[number + 1 : end]) + "\n",
                marker=above if above in (RUNS, ENV_LINES) else None,
            )
        )
        number = end + 1
    return blocks


def test_every_shell_block_is_marked_or_set_aside() -> None:
    blocks = [block for block in readme_blocks(README.read_text()) if block.language == "sh"]
    assert any(block.marker == RUNS for block in blocks), f"no block of README.md is marked {RUNS}"
    set_aside = {
        block.line: start for block in blocks for start in NOT_FOR_A_LAB if block.text.startswith(start)
    }
    unmarked = [block for block in blocks if block.marker is None and block.line not in set_aside]
    assert not unmarked, "shell blocks neither marked for a lab nor in NOT_FOR_A_LAB: " + ", ".join(
        f"README.md:{block.line} ({block.text.splitlines()[0]})" for block in unmarked
    )
    gone = set(NOT_FOR_A_LAB) - set(set_aside.values())
    assert not gone, f"NOT_FOR_A_LAB names blocks README.md no longer has: {gone}"
    both = [block.line for block in blocks if block.marker and block.line in set_aside]
    assert not both, f"blocks both marked and in NOT_FOR_A_LAB, at README.md lines {both}"


# ---------------------------------------------------------------------------- running them


@dataclass(frozen=True)
class Substitution:
    """One documented change to a block's text (see the module's docstring)."""

    pattern: str
    replacement: str


def substitutions(lab: RunningLab, tb: Emulator) -> list[Substitution]:
    """The changes of the module's docstring, for this lab and this emulator."""
    return [
        Substitution(r"--duration \d+", f"--duration {SECONDS}"),
        Substitution(r"127\.0\.0\.1:5000\b", f"127.0.0.1:{lab.port('PORTAL_PORT')}"),
        Substitution(r"^TOKEN=\.\.\.", 'TOKEN=$(./lab users token create "$PORTAL_ADMIN_USER")'),
        Substitution(r"(\./lab users add \w+)", r"\1 --password-stdin"),
        Substitution(r"token revoke 3\b", "token revoke 1"),
        Substitution(r"data/runs/<run-id>", "data/runs/$(ls data/runs | tail -n 1)"),
        Substitution(r"http://localhost:8080\b", tb.url),
        Substitution(r"^TB_MQTT_PORT=1883$", f"TB_MQTT_PORT={tb.mqtt_port}"),
    ]


@dataclass(frozen=True)
class Ran:
    """A block as it ran: its text after substitution, exit status and output."""

    block: Block
    script: str
    returncode: int
    output: str

    def expect(self, condition: bool, why: str) -> None:
        """Fail with the block's README line, its text as run and its output unless `condition`."""
        if not condition:
            pytest.fail(
                f"README.md:{self.block.line}: {why} (exit status {self.returncode})\n"
                f"--- the block as run ---\n{self.script}--- its output ---\n{self.output}",
                pytrace=False,
            )


@dataclass
class Workspace:
    """A folder laid out as the checkout is for a user, and the shell state between blocks."""

    root: Path
    lab: RunningLab
    tb: Emulator
    environ: dict[str, str]
    used: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, root: Path, lab: RunningLab, tb: Emulator, user_env: PythonEnv) -> Workspace:
        root.mkdir()
        shutil.copyfile(lab.config.env_file, root / ".env")
        (root / ".venv").symlink_to(user_env.venv)
        launcher = root / "lab"
        where = f'--env-file "{lab.config.env_file}" --data-dir "{lab.config.data_dir}"'
        launcher.write_text(f'#!/bin/sh\nexec "{ROOT / "lab"}" {where} "$@"\n')
        launcher.chmod(0o755)
        (root / "data").mkdir()
        control = root / "control"
        control.mkdir(mode=0o700)
        environ = user_env.environ(STRESS_DURATION=SECONDS, STRESS_CONTROL_DIR=str(control))
        return cls(root, lab, tb, environ)

    def substitute(self, block: Block, changes: list[Substitution]) -> str:
        text = block.text
        for change in changes:
            text, count = re.subn(change.pattern, change.replacement, text, flags=re.MULTILINE)
            self.used[change.pattern] = self.used.get(change.pattern, 0) + count
        return text

    def run(self, block: Block, script: str, stdin: str = "") -> Ran:
        """Run a block with bash as a user's shell would, carrying its exports to the next."""
        state = self.root / ".block-environment"
        # Background jobs are waited for, each one's exit status counting (bash -e).
        wrapped = f'{script}\nfor job in $(jobs -p); do wait "$job"; done\nenv -0 > "{state}"\n'
        process = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", "-c", wrapped],
            cwd=self.root,
            env=self.environ,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(stdin, timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            output, _ = process.communicate()
            output += f"\n[killed after {BLOCK_TIMEOUT_S} s]"
        finally:
            _kill_group(process.pid)
        if process.returncode == 0 and state.exists():
            after = dict(item.split("=", 1) for item in state.read_text().split("\0") if "=" in item)
            self.environ.update(
                (key, value)
                for key, value in after.items()
                if key not in {"_", "SHLVL", "PWD", "OLDPWD"} and self.environ.get(key) != value
            )
        return Ran(block, script, process.returncode, output)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@dataclass
class SteeredRun:
    """The run the steering block acts on, started before it."""

    process: subprocess.Popen[bytes]
    folder: Path
    log: Path

    @classmethod
    def start(cls, workspace: Workspace) -> SteeredRun:
        folder, log = workspace.root / "data" / "steered", workspace.root / "steered.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*STEERED_RUN.split(), "--out", str(folder)],
                cwd=workspace.root,
                env=workspace.environ,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        control = Path(workspace.environ["STRESS_CONTROL_DIR"])
        deadline = time.monotonic() + 30
        while not list(control.glob("*.json")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        steered = cls(process, folder, log)
        if not list(control.glob("*.json")):
            _kill_group(process.pid)
            raise AssertionError(f"the run to steer never listened:\n{steered.output()}")
        return steered

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self) -> int:
        return self.process.wait(timeout=60)


@contextlib.contextmanager
def run_in_progress(workspace: Workspace) -> Iterator[SteeredRun]:
    """The run to steer, started and listening; killed if it outlives the test."""
    steered = SteeredRun.start(workspace)
    try:
        yield steered
    finally:
        _kill_group(steered.process.pid)


# ---------------------------------------------------------------------------- what blocks promise


def _first_value_stored(workspace: Workspace, ran: Ran) -> None:
    device = workspace.lab.env["LAB_DEVICE_ID"]
    deadline = time.monotonic() + 10
    with workspace.lab.db() as db:
        while time.monotonic() < deadline:
            row = db.execute(
                "SELECT 1 FROM readings WHERE room = 'lab' AND device = %s AND attr = 'temperature' "
                "AND value_num = 21.5",
                (device,),
            ).fetchone()
            if row is not None:
                return
            time.sleep(0.1)
    ran.expect(False, "the first value never reached the database")


def _presence_said(workspace: Workspace, ran: Ran) -> None:
    device = workspace.lab.env["LAB_DEVICE_ID"]
    deadline = time.monotonic() + 10
    with workspace.lab.db() as db:
        while time.monotonic() < deadline:
            row = db.execute(
                "SELECT d.presence FROM devices d JOIN rooms r ON r.id = d.room_id "
                "WHERE r.name = 'lab' AND d.name = %s",
                (device,),
            ).fetchone()
            if row is not None and row[0] == "offline":
                return
            time.sleep(0.1)
    ran.expect(False, "the demo device's goodbye never reached the database")


def _value_shown(_workspace: Workspace, ran: Ran) -> None:
    ran.expect("21.5" in ran.output and "temperature" in ran.output, "the query does not show 21.5")


def _users_managed(_workspace: Workspace, ran: Ran) -> None:
    for said in ("user alice added", "token 1 for alice", "token 1 revoked", "user alice removed"):
        ran.expect(said in ran.output, f"no {said!r}")


def _history_answered(_workspace: Workspace, ran: Ran) -> None:
    last = ran.output.strip().splitlines()[-1]
    ran.expect(last.startswith("{") and "error" not in json.loads(last), "the API answered no history")


def _runs_written(workspace: Workspace, ran: Ran) -> None:
    runs = sorted((workspace.root / "data" / "runs").iterdir())
    ran.expect(len(runs) == 2, f"two runs, but run folders {[run.name for run in runs]}")
    for run in runs:
        ran.expect((run / "report.html").is_file(), f"no report.html in {run.name}")
    (lab_run_folder,) = [run for run in runs if "-lab-" in run.name]
    lab_run = json.loads((lab_run_folder / "summary.json").read_text())
    ran.expect(lab_run["sent"] > 0 and lab_run["failed"] == 0, f"the lab run: {lab_run}")


def _accounts_provisioned(workspace: Workspace, ran: Ran) -> None:
    table = workspace.root / "data" / "provisioning" / "lab-devices.csv"
    ran.expect(len(table.read_text().splitlines()) == 1 + 500, f"{table} does not list 500 accounts")


def _viewers_measured(workspace: Workspace, ran: Ran) -> None:
    figures = workspace.root / "data" / "viewers" / "viewers.json"
    ran.expect(figures.is_file(), f"no {figures}")


def _account_works(workspace: Workspace, ran: Ran) -> None:
    port = str(workspace.lab.port("MQTT_PORT"))
    login = ["-h", "127.0.0.1", "-p", port, "-u", "lamp2", "-P", "SECRET"]
    done = subprocess.run(
        ["mosquitto_pub", *login, "-t", "office/lab/lamp2/on", "-m", "true"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    ran.expect(done.returncode == 0, f"lamp2 cannot connect: {done.stderr}")


def _fleet_removed(workspace: Workspace, ran: Ran) -> None:
    ran.expect(re.search(r"removed [1-9][\d,]* device\(s\)", ran.output) is not None, "no devices removed")
    with workspace.lab.db() as db:
        row = db.execute("SELECT count(*) FROM devices WHERE name LIKE 'dev0%'").fetchone()
    ran.expect(row is not None and row[0] == 0, f"{row} dev0... devices are still stored")


def _thingsboard_driven(workspace: Workspace, ran: Ran) -> None:
    names = {device.name for device in workspace.tb.devices()}
    ran.expect(
        len({name for name in names if re.fullmatch(r"th\d+", name)}) == 1000,
        "the emulator lacks th00001-th01000",
    )
    ran.expect(
        len({name for name in names if name.startswith("th-gateway-")}) == 10,
        "the emulator lacks the 10 gateways",
    )
    ran.expect(workspace.tb.stats["telemetry_messages"] > 0, "no telemetry reached the emulator")


#: What a block promises beyond exiting 0, by a command it holds.
PROMISES: dict[str, Callable[[Workspace, Ran], None]] = {
    '-t "office/lab/$LAB_DEVICE_ID/temperature" -m 21.5': _first_value_stored,
    "SELECT * FROM readings": _value_shown,
    "--will-payload lost": _presence_said,
    "./lab users add alice": _users_managed,
    "/api/history?": _history_answered,
    ".venv/bin/stress report": _runs_written,
    ".venv/bin/stress provision --target lab": _accounts_provisioned,
    ".venv/bin/stress viewers": _viewers_measured,
    "dynsec createClient lamp2": _account_works,
    ".venv/bin/stress check --target thingsboard": _thingsboard_driven,
    "./lab devices remove --prefix dev0 --yes": _fleet_removed,
}


@pytest.fixture
def readme_lab(lab_env: PythonEnv, new_lab_config: Callable[..., LabConfig]) -> Iterator[RunningLab]:
    """A lab whose migrations and portal run from the user's environment."""
    config = replace(new_lab_config("readme"), python_env=lab_env.venv)
    running = Lab(config)
    try:
        running.up()
        yield RunningLab(config, running)
    finally:
        running.down()


@pytest.mark.integration
def test_the_readme_commands_run_as_written(
    lab_env: PythonEnv, readme_lab: RunningLab, tmp_path: Path
) -> None:
    blocks = [block for block in readme_blocks(README.read_text()) if block.marker is not None]
    assert any(block.marker == RUNS for block in blocks), f"no block of README.md is marked {RUNS}"
    password = secrets.token_urlsafe(16)
    kept: set[str] = set()
    with Emulator(username=TB_USER, password=TB_PASSWORD) as tb:
        workspace = Workspace.build(tmp_path / "checkout", readme_lab, tb, lab_env)
        changes = substitutions(readme_lab, tb)
        for block in blocks:
            script = workspace.substitute(block, changes)
            if block.marker == ENV_LINES:
                with (workspace.root / ".env").open("a") as env_file:
                    env_file.write(script)
                continue
            with contextlib.ExitStack() as stack:
                steering = ".venv/bin/stress pause" in block.text
                steered = stack.enter_context(run_in_progress(workspace)) if steering else None
                ran = workspace.run(
                    block, script, stdin=f"{password}\n" if "--password-stdin" in script else ""
                )
                ran.expect(ran.returncode == 0, "the block failed")
                ran.expect("Traceback (most recent call last)" not in ran.output, "a traceback")
                if steered is not None:
                    _steered_as_told(steered, ran)
            for command, promise in PROMISES.items():
                if command in block.text:
                    promise(workspace, ran)
                    kept.add(command)
    assert kept == set(PROMISES), f"PROMISES names commands no marked block holds: {set(PROMISES) - kept}"
    unused = [pattern for pattern, count in workspace.used.items() if count == 0]
    assert not unused, f"substitutions that match no marked block (update the docstring): {unused}"


def _steered_as_told(steered: SteeredRun, ran: Ran) -> None:
    returncode = steered.wait()
    ran.expect(returncode == 0, f"the steered run ended with {returncode}:\n{steered.output()}")
    events = [json.loads(line) for line in (steered.folder / "events.jsonl").read_text().splitlines()]
    told = {(event["event"], event.get("device")) for event in events}
    ran.expect(
        {("paused", "dev00042"), ("paused", "dev00043"), ("resumed", "dev00042")} <= told,
        "the steered run's events lack the pauses and the resume",
    )
    summary = json.loads((steered.folder / "summary.json").read_text())
    ran.expect(summary["stopped"] != "completed", f"the run was not stopped: {summary['stopped']}")
