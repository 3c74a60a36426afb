"""The ``stress`` command line: each command's help lists the flags it reads, says defaults
meaningfully, and a mistyped option or command is one line with the closest one it takes."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stress.cli.main import build_parser, given_flags, main, scenario_of
from stress.scenario import Scenario

#: The real console script, beside the interpreter running the tests.
STRESS = Path(sys.executable).with_name("stress")

#: Flags only ``stress run`` reads: the load, faults, timing, measurement and output.
RUN_ONLY = {
    "--interval",
    "--duration",
    "--shape",
    "--stages",
    "--wave-period",
    "--duration-scale",
    "--behaviour",
    "--rooms",
    "--active",
    "--root",
    "--topic",
    "--command-topic",
    "--processes",
    "--cluster",
    "--cpus",
    "--churn",
    "--storm-at",
    "--slow-devices",
    "--connect-rate",
    "--reconnect-min",
    "--ack-timeout",
    "--drain",
    "--e2e-devices",
    "--collapse-share",
    "--metrics-port",
    "--dashboard",
    "--dashboard-port",
    "--out",
    "--quiet",
}
#: What ``stress check`` reads: how the run's first device connects, and who it is.
CHECK_READS = {
    "--scenario",
    "--target",
    "--host",
    "--port",
    "--protocol",
    "--tls",
    "--ca-file",
    "--insecure",
    "--cert",
    "--key",
    "--ws-path",
    "--keepalive",
    "--connect-timeout",
    "--env-file",
    "--credentials",
    "--username",
    "--password",
    "--transport",
    "--gateways",
    "--tokens",
    "--tb-url",
    "--tb-username",
    "--tb-password",
    "--devices",
    "--prefix",
    "--qos",
    "--inflight",
    "--debug",
}
#: The flags of the commands that steer a run in progress.
STEERING = {"--help", "--run"}

#: Per command: flags its help must list, and flags it must not.
EXPECTED: dict[str, tuple[set[str], set[str]]] = {
    "run": (RUN_ONLY | CHECK_READS, set()),
    "check": (CHECK_READS, RUN_ONLY),
    "provision": (
        {"--target", "--devices", "--prefix", "--batch", "--tokens", "--profile", "--groups"},
        RUN_ONLY | {"--qos", "--yes", "--dry-run"},
    ),
    "deprovision": ({"--target", "--prefix", "--dry-run", "--yes"}, RUN_ONLY | {"--devices", "--profile"}),
    "report": ({"--no-html"}, RUN_ONLY | CHECK_READS),
    "dashboard": ({"--host", "--port", "--run", "--runs"}, (RUN_ONLY | CHECK_READS) - {"--host", "--port"}),
    "viewers": (
        {"--portal", "--count", "--scope", "--settle", "--duration", "--out", "--debug"},
        {"--devices", "--interval", "--churn", "--target", "--qos", "--dashboard"},
    ),
    **dict.fromkeys(
        ("stop", "pause", "resume", "scale", "rate", "status"), (STEERING, RUN_ONLY | CHECK_READS)
    ),
}


@pytest.fixture(autouse=True)
def _unwrapped_help(monkeypatch: pytest.MonkeyPatch) -> None:
    """Help on one line per flag, so that no flag is split at its hyphen, whatever the terminal."""
    monkeypatch.setenv("COLUMNS", "1000")


def commands() -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser, by name."""
    parser = build_parser()
    return parser._subparsers._group_actions[0].choices  # type: ignore[union-attr,return-value]


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {
        option for action in parser._actions for option in action.option_strings if option.startswith("--")
    }


def help_of(command: str) -> str:
    """What ``stress COMMAND --help`` prints (its variables applied, as in ``main``)."""
    parsers = build_parser(command)._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    chosen: argparse.ArgumentParser = parsers[command]  # type: ignore[index]
    return chosen.format_help()


def failure(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    """The one line ``stress WORDS`` ends on, with exit status 2."""
    with pytest.raises(SystemExit) as ended:
        main(list(words))
    assert ended.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1, err
    return err.rstrip("\n")


# ---------------------------------------------------------------------- what each help lists


def test_every_command_is_covered() -> None:
    assert set(commands()) == set(EXPECTED)


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_a_commands_help_lists_the_flags_it_reads(command: str) -> None:
    wanted, unwanted = EXPECTED[command]
    listed = set(re.findall(r"(--[a-z0-9][a-z0-9-]*)", help_of(command).split("options:", 1)[1]))
    taken = options(commands()[command])
    assert wanted <= taken, sorted(wanted - taken)
    assert not unwanted & taken, sorted(unwanted & taken)
    assert taken <= listed


def test_check_takes_exactly_how_the_first_device_connects() -> None:
    assert options(commands()["check"]) == CHECK_READS | {"--help"}


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_help_says_what_the_command_does_and_every_flag_has_a_text(command: str) -> None:
    parser = commands()[command]
    assert parser.description and len(parser.description) > 30
    for action in parser._actions:
        assert action.help and action.help.strip() and action.help != argparse.SUPPRESS, action.dest


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_no_default_is_shown_as_a_python_value(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    meaningless = re.compile(r"default: (None|\(\)|\[\]|''|\"\"|\)|set\(\))|PosixPath|<[a-z]+ |\(\d+,\)")
    for variables in ({}, {"STRESS_CPUS": "0", "STRESS_TLS": "yes", "STRESS_STORM_AT": "30,90"}):
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        text = " ".join(help_of(command).split())
        assert not meaningless.search(text), meaningless.search(text)


def test_defaults_are_said_as_a_user_writes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRESS_TLS", "yes")
    text = " ".join(help_of("run").split())
    assert "[STRESS_INTERVAL] (default: 1)" in text
    assert "[STRESS_TOKENS] (default: data/provisioning/tokens.json)" in text
    assert "connect with TLS [STRESS_TLS] (default: on)" in text
    assert "(default: every device takes part)" in text
    assert (
        "(default: lab: MQTT_PORT of --env-file, MQTT_TLS_PORT with --tls, MQTT_WS_PORT with --transport "
        "websocket; thingsboard: TB_MQTT_PORT; else 1883)" in text
    )
    dashboard = " ".join(help_of("dashboard").split())
    assert "(default: the run in progress)" in dashboard
    assert "(default: 8089)" in dashboard
    monkeypatch.setenv("STRESS_COUNT", "20")
    viewers = " ".join(help_of("viewers").split())
    assert "viewers, 1..5000 [STRESS_COUNT] (default: 20)" in viewers  # the variable's, as it applies
    assert "(default: 0: no limit" not in viewers and "[STRESS_CONNECT_RATE] (default: 0)" in viewers


# ---------------------------------------------------------------------- mistyped options and commands


@pytest.mark.parametrize(
    ("words", "line"),
    [
        (["run", "--devcies", "3"], "stress run: error: unknown option --devcies; did you mean --devices?"),
        (["run", "--devcies=3"], "stress run: error: unknown option --devcies; did you mean --devices?"),
        (["run", "--qso", "1"], "stress run: error: unknown option --qso; did you mean --qos?"),
        (["check", "--devcies=3"], "stress check: error: unknown option --devcies; did you mean --devices?"),
        (
            ["check", "--duraton", "5"],
            "stress check: error: unknown option --duraton (see stress check --help)",
        ),
        (["stop", "--devices=3"], "stress stop: error: unknown option --devices (see stress stop --help)"),
        (
            ["report", "data/runs/x", "--devices=3"],
            "stress report: error: unknown option --devices (see stress report --help)",
        ),
        (["scale", "5", "--rnu", "x"], "stress scale: error: unknown option --rnu; did you mean --run?"),
        (["run", "--zzzz"], "stress run: error: unknown option --zzzz (see stress run --help)"),
        (["run", "-z"], "stress run: error: unknown option -z (see stress run --help)"),
        (["run", "--"], "stress run: error: unexpected argument -- (see stress run --help)"),
        (
            ["run", "--", "--devices", "3"],
            "stress run: error: unexpected argument -- (see stress run --help)",
        ),
        (["stop", "now"], "stress stop: error: unexpected argument now (see stress stop --help)"),
        (["stop", "-5"], "stress stop: error: unexpected argument -5 (see stress stop --help)"),
        (["rn"], "stress: error: unknown command rn; did you mean run?"),
        (["chek", "--target", "mqtt"], "stress: error: unknown command chek; did you mean check?"),
        (["zzzz"], "stress: error: unknown command zzzz (see stress --help)"),
        (["--hlep"], "stress: error: unknown option --hlep; did you mean --help?"),
        (["--", "run"], "stress: error: unknown command -- (see stress --help)"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_a_mistyped_word_is_one_line_with_the_closest_only_when_close(
    capsys: pytest.CaptureFixture[str], words: list[str], line: str
) -> None:
    assert failure(capsys, *words) == line


@pytest.mark.parametrize(
    "run_only", ["--churn", "--interval", "--dashboard", "--out", "--processes", "--duration-scale"]
)
def test_check_refuses_what_only_a_run_reads(capsys: pytest.CaptureFixture[str], run_only: str) -> None:
    line = failure(capsys, "check", "--target", "mqtt", run_only, "1")
    assert line.startswith(f"stress check: error: unknown option {run_only}")


def test_the_console_script_says_it_in_one_line(tmp_path: Path) -> None:
    def stress(*words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(STRESS), *words], capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path
        )

    typo = stress("run", "--devcies", "3", "--target", "mqtt")
    assert (typo.returncode, typo.stdout) == (2, "")
    assert typo.stderr == "stress run: error: unknown option --devcies; did you mean --devices?\n"
    command = stress("rn")
    assert (command.returncode, command.stderr) == (
        2,
        "stress: error: unknown command rn; did you mean run?\n",
    )
    check = stress("check", "--help")
    assert check.returncode == 0 and check.stdout.startswith("usage: stress check")
    assert "--churn" not in check.stdout and "--devices" in check.stdout
    assert not list(tmp_path.iterdir())  # nothing ran


# ---------------------------------------------------------------------- check builds the run's scenario


def scenario(*words: str) -> Scenario:
    """The scenario ``stress WORDS`` would build (run or check), without running anything."""
    args = build_parser(words[0]).parse_args(words)
    args.given = given_flags(words[0], words)
    return scenario_of(args)


def test_check_builds_the_scenario_the_run_would(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "target: mqtt\nport: 1884\nprefix: probe\nchurn: 0.5\ninterval: 5\ntopic: '{root}/{device}/{attr}'\n"
        "stages:\n  - {devices: 3, duration: 10}\n  - {devices: 300000, duration: 5}\n"
    )
    checked = scenario("check", "--scenario", str(path), "--qos", "1")
    assert checked == scenario("run", "--scenario", str(path), "--qos", "1")
    assert (checked.devices, checked.churn, checked.options["topic"]) == (
        300_000,
        0.5,
        "{root}/{device}/{attr}",
    )
    plain = scenario("check", "--target", "mqtt", "--devices", "7", "--prefix", "probe")
    assert plain == scenario("run", "--target", "mqtt", "--devices", "7", "--prefix", "probe")


def test_check_reads_only_its_own_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.toml"
    path.write_text('target = "mqtt"\n[[stages]]\nduration = 10\n')
    monkeypatch.setenv("STRESS_DEVICES", "7")
    monkeypatch.setenv("STRESS_CHURN", "not-a-share")  # for runs only: check never reads it
    checked = scenario("check", "--scenario", str(path))
    assert checked.devices == 7  # a stage without devices takes STRESS_DEVICES, as in the run
    assert checked.churn == 0.0
    with pytest.raises(SystemExit):
        scenario("run", "--scenario", str(path))
