"""`./lab`: start, stop, inspect and test the lab."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from labctl import devices, envfile, install, ui
from labctl.config import MAX_REPLICAS, ROOT, LabConfig
from labctl.errors import LabError
from labctl.lab import Lab
from labctl.replicas import Front, Redis, replica_name
from labctl.services import SERVICE_NAMES, ServiceError

#: Every name a service may have in some lab; which ones a lab has depends on its .env.
SERVICE_CHOICES = frozenset(
    {*SERVICE_NAMES, Redis.name, Front.name, *map(replica_name, range(1, MAX_REPLICAS + 1))}
)
#: Portal replicas of Compose's profile `replicas`.
COMPOSE_REPLICAS = 2
REPLICA_SERVICES = f"db, mosquitto, nodered, {Redis.name}, web-1 ... web-N, {Front.name}"

SERVICE_HELP = (
    f"{', '.join(SERVICE_NAMES)}; with PORTAL_REPLICAS above 1: {REPLICA_SERVICES} (and web: every replica)"
)

EPILOG = f"""\
services: {", ".join(SERVICE_NAMES)}
  with PORTAL_REPLICAS=N above 1 in .env: {REPLICA_SERVICES}
  (`web` then names every replica; `restart web` restarts them one after the other)

examples:
  ./lab up                 start everything (installs what is missing on first run)
  ./lab status             running or not, pid, port and health of each service
  ./lab logs web -f        follow the portal's log
  ./lab restart mosquitto  restart one service
  ./lab users add alice    add a portal user (asks for the password)
  ./lab devices remove --prefix sim-   remove the stress tool's devices with their data
  ./lab down               stop everything
  ./lab test               run the whole test suite on services of its own
  ./lab lock               newest allowed Python packages into uv.lock and locks/, then ./lab test
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _service_name(text: str) -> str:
    if text not in SERVICE_CHOICES:
        raise argparse.ArgumentTypeError(
            f"unknown service {text!r}; the services are {', '.join(SERVICE_NAMES)} "
            f"(with PORTAL_REPLICAS above 1: {REPLICA_SERVICES})"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    """The `./lab` command line."""
    parser = argparse.ArgumentParser(
        prog="./lab",
        description="Run the IoT lab (Mosquitto, PostgreSQL, Node-RED, portal) as local processes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="the lab's variables (default: .env, created from .env.example)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where state and logs live (default: data/)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = commands.add_parser("up", help="install what is missing and start every service")
    up.add_argument(
        "--docker",
        action="store_true",
        help="run `docker compose up -d` instead (needs a Docker engine; with PORTAL_REPLICAS above 1, "
        "its profile `replicas`)",
    )
    up.add_argument(
        "--no-install", action="store_true", help="do not install anything; fail if something is missing"
    )
    commands.add_parser("down", help="stop every service")
    commands.add_parser("status", help="show each service: running, pid, port, health")
    logs = commands.add_parser("logs", help="show the log of one or every service")
    logs.add_argument("service", nargs="?", type=_service_name, metavar="SERVICE", help=SERVICE_HELP)
    logs.add_argument(
        "-n", "--lines", type=_positive_int, default=40, help="lines to show per service (default 40)"
    )
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    for name, text in (
        ("start", "start one service"),
        ("stop", "stop one service"),
        ("restart", "stop then start one service"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("service", type=_service_name, metavar="SERVICE", help=SERVICE_HELP)
    commands.add_parser("env", help="create .env from .env.example with fresh secrets (if missing)")
    users = commands.add_parser(
        "users",
        help="manage portal users and API tokens (see ./lab users --help)",
        description="Runs the portal's user tool with this lab's database: "
        "add NAME | list | remove NAME | passwd NAME | token create NAME | token list | token revoke ID.",
    )
    users.add_argument("user_args", nargs=argparse.REMAINDER, help="arguments for the user tool")
    devices.add_parser(commands)
    test = commands.add_parser(
        "test",
        help="install everything and run lint, types and the whole test suite",
        description="Install what the suite needs, then run ruff, mypy and pytest. "
        "The tests start their own services on free ports and stop them.",
    )
    test.add_argument("pytest_args", nargs=argparse.REMAINDER, help="extra arguments for pytest")
    lock = commands.add_parser(
        "lock",
        help="move the locked Python packages to their newest allowed versions, then run the suite",
        description="Re-resolve uv.lock within the ranges of pyproject.toml, rewrite the hashed "
        "requirement files in locks/ that every install reads, then run ./lab test against them. "
        "Commit uv.lock and locks/ when the suite passes.",
    )
    lock.add_argument(
        "--package",
        action="append",
        default=[],
        metavar="NAME",
        help="move only this package (and what it needs); repeat for more (default: every package)",
    )
    lock.add_argument("--no-test", action="store_true", help="only rewrite the lock; do not run the suite")
    return parser


def _ensure_env(args: argparse.Namespace) -> LabConfig:
    env_file = (args.env_file or ROOT / ".env").resolve()
    if envfile.ensure(env_file, ROOT / ".env.example"):
        ui.info(f"Created {env_file} with fresh random secrets (keep it private; it is not in git).")
    else:
        _add_new_secrets(env_file)
    return LabConfig.load(env_file, args.data_dir)


def _add_new_secrets(env_file: Path) -> None:
    """A secret that this version of the lab needs and an older `.env` lacks is added to it."""
    added = envfile.add_new_secrets(env_file, ROOT / ".env.example")
    if added:
        ui.info(f"Added new secret(s) {', '.join(added)} to {env_file}.")


def _up(args: argparse.Namespace) -> int:
    config = _ensure_env(args)
    if args.docker:
        return _docker_up(config)
    if not args.no_install:
        install.ensure_all(config.root, config.venv, for_tests=False, replicas=config.replicas > 1)
    lab = Lab(config)
    ui.info("Starting the lab:")
    already = lab.up()
    if already:
        ui.info(f"Already running: {', '.join(already)}")
    ui.info("\nThe lab is up:")
    for what, where in lab.urls():
        ui.info(f"  {what:<12} {where}")
    ui.info("Passwords are in the credentials file. Stop with ./lab down.")
    return 0


def _docker_up(config: LabConfig) -> int:
    docker = shutil.which("docker")
    if docker is None:
        raise ServiceError("docker not found; use ./lab up (without --docker) to run the lab natively")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
    if probe.returncode != 0:
        raise ServiceError("`docker compose` is not available; install the Compose plugin or use ./lab up")
    probe = subprocess.run([docker, "info"], capture_output=True, check=False)
    if probe.returncode != 0:
        raise ServiceError("no Docker engine is running here; start it, or use ./lab up to run natively")
    compose = [docker, "compose", "--env-file", str(config.env_file)]
    if config.replicas == 1:
        compose += ["up", "-d", "--wait"]
    else:
        # The profile's two replicas and front take the place of `web` (see docker-compose.yml).
        if config.replicas != COMPOSE_REPLICAS:
            ui.info(f"Compose runs {COMPOSE_REPLICAS} portal replicas (PORTAL_REPLICAS is for ./lab up).")
        compose += ["--profile", "replicas", "up", "-d", "--wait", "--scale", "web=0"]
    return subprocess.run(compose, cwd=config.root, check=False).returncode


def _status(lab: Lab) -> int:
    rows = lab.status()
    ui.info(f"{'SERVICE':<10} {'STATE':<8} {'PID':>7} {'PORT':>6}  HEALTH")
    for row in rows:
        state = "running" if row.running else "stopped"
        pid = str(row.pid) if row.pid else "-"
        ui.info(f"{row.name:<10} {state:<8} {pid:>7} {row.port:>6}  {row.health}")
    return 0 if all(row.health == "healthy" for row in rows) else 3


def _logs(lab: Lab, service: str | None, lines: int, follow: bool) -> int:
    names = [each.name for each in lab.named(service)] if service else list(lab.services)
    paths = {name: lab.table.log_file(name) for name in names}
    for name, path in paths.items():
        if not path.exists():
            ui.info(f"==> {name}: no log yet ({path})")
            continue
        ui.info(f"==> {name} ({path})")
        for line in path.read_text(errors="replace").splitlines()[-lines:]:
            ui.info(line)
    if not follow:
        return 0
    offsets = {name: path.stat().st_size if path.exists() else 0 for name, path in paths.items()}
    try:
        while True:
            for name, path in paths.items():
                if not path.exists():
                    continue
                with path.open("rb") as handle:
                    handle.seek(offsets[name])
                    chunk = handle.read()
                    offsets[name] = handle.tell()
                for line in chunk.decode(errors="replace").splitlines():
                    ui.info(f"{name}| {line}" if len(paths) > 1 else line)
            time.sleep(0.3)
    except KeyboardInterrupt:
        return 0


def _users(config: LabConfig, user_args: list[str]) -> int:
    python = config.venv / "bin" / "python"
    if not python.exists():
        raise ServiceError("the Python environment is missing; run ./lab up first")
    return subprocess.run(
        [str(python), "-m", "web.users", *(user_args or ["--help"])],
        cwd=config.root,
        env=config.service_env(),
        check=False,
    ).returncode


def _stop_one(lab: Lab, args: argparse.Namespace) -> int:
    with ui.step(f"stopping {args.service}", done="stopped") as step:
        if not lab.stop(args.service):
            step.result = "was not running"
    return 0


def _start_one(lab: Lab, args: argparse.Namespace) -> int:
    if not lab.start(args.service):
        ui.info(f"{args.service} is already running")
    return 0


def _restart_one(lab: Lab, args: argparse.Namespace) -> int:
    lab.restart(args.service)
    return 0


def _down(lab: Lab, _args: argparse.Namespace) -> int:
    lab.down()
    return 0


def _env(args: argparse.Namespace) -> int:
    _ensure_env(args)
    return 0


def _test(args: argparse.Namespace) -> int:
    from labctl import testrun  # noqa: PLC0415 - only this command needs it

    return testrun.run(args.pytest_args)


def _lock(args: argparse.Namespace) -> int:
    from labctl import testrun  # noqa: PLC0415 - only this command needs it

    ui.info("Refreshing the lock with uv (from the test environment):")
    install.ensure_all(ROOT, testrun.VENV, for_tests=True)
    install.refresh_locks(ROOT, testrun.VENV / "bin" / "uv", args.package)
    if args.no_test:
        ui.info("Lock refreshed; run ./lab test before committing uv.lock and locks/.")
        return 0
    return testrun.run([])


_WITHOUT_LAB: dict[str, Callable[[argparse.Namespace], int]] = {
    "up": _up,
    "env": _env,
    "test": _test,
    "lock": _lock,
}
_WITH_LAB: dict[str, Callable[[Lab, argparse.Namespace], int]] = {
    "down": _down,
    "status": lambda lab, _args: _status(lab),
    "logs": lambda lab, args: _logs(lab, args.service, args.lines, args.follow),
    "start": _start_one,
    "stop": _stop_one,
    "restart": _restart_one,
}


def run(args: argparse.Namespace) -> int:
    """Carry out one parsed command."""
    if args.command in _WITHOUT_LAB:
        return _WITHOUT_LAB[args.command](args)
    env_file = (args.env_file or ROOT / ".env").resolve()
    if env_file.is_file():
        _add_new_secrets(env_file)
    config = LabConfig.load(env_file, args.data_dir)
    if args.command == "users":
        return _users(config, args.user_args)
    if args.command == "devices":
        return devices.run(config, args)
    return _WITH_LAB[args.command](Lab(config), args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `./lab`; errors are one line on stderr and a non-zero status."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except LabError as exc:
        ui.error(str(exc))
        return 1
    except KeyboardInterrupt:
        ui.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
