"""Where the ThingsBoard server is and who signs in: flags, then ``TB_*`` variables, then ``.env``.

``TB_URL`` (REST, default ``http://localhost:8080``), ``TB_USERNAME`` and ``TB_PASSWORD`` (a
tenant administrator), ``TB_MQTT_HOST`` (default: the host of ``TB_URL``) and ``TB_MQTT_PORT``
(default 1883). A flag wins over the environment, which wins over the ``.env`` file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from stress.errors import ScenarioError

DEFAULT_URL = "http://localhost:8080"
NAMES = ("TB_URL", "TB_USERNAME", "TB_PASSWORD", "TB_MQTT_HOST", "TB_MQTT_PORT")


@dataclass(frozen=True)
class TbSettings:
    """How to reach one ThingsBoard server."""

    url: str
    username: str
    password: str
    mqtt_host: str
    mqtt_port: int


def _from_file(env_file: Path | None) -> dict[str, str]:
    if env_file is None or not env_file.is_file():
        return {}
    from labctl import envfile  # noqa: PLC0415 - the lab's own .env reader

    try:
        values = envfile.read(env_file)
    except (envfile.EnvFileError, OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"cannot read {env_file}: {exc}") from None
    return {name: values[name] for name in NAMES if values.get(name)}


def tb_settings(
    env_file: Path | None,
    *,
    url: str = "",
    username: str = "",
    password: str = "",
    mqtt_host: str = "",
    mqtt_port: int | None = None,
) -> TbSettings:
    """The settings, each from its flag, else ``TB_*`` in the environment, else ``env_file``."""
    found = _from_file(env_file)
    found.update({name: os.environ[name] for name in NAMES if os.environ.get(name)})
    chosen_url = url or found.get("TB_URL") or DEFAULT_URL
    port_text = str(mqtt_port) if mqtt_port is not None else found.get("TB_MQTT_PORT", "1883")
    if not port_text.isdigit() or not 0 < int(port_text) < 65_536:
        raise ScenarioError(f"TB_MQTT_PORT={port_text!r} is not a port: write a number from 1 to 65535")
    return TbSettings(
        url=chosen_url,
        username=username or found.get("TB_USERNAME", ""),
        password=password or found.get("TB_PASSWORD", ""),
        mqtt_host=mqtt_host or found.get("TB_MQTT_HOST") or urlsplit(chosen_url).hostname or "localhost",
        mqtt_port=int(port_text),
    )
