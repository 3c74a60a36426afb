"""The lab's `.env` file: read it, and create it from `.env.example` with fresh secrets.

The variable names are a user-facing contract shared by the native run and Docker Compose.
Only the standard library is used: this runs before the Python environment exists.
"""

from __future__ import annotations

import re
import secrets
import string
from pathlib import Path

from labctl.errors import LabError

# Variables whose empty value in .env.example means "generate a random secret".
SECRET_SUFFIXES = ("_PASSWORD", "_SECRET", "_SECRET_KEY")

_SECRET_ALPHABET = string.ascii_letters + string.digits
_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


class EnvFileError(LabError):
    """A `.env` file that cannot be read or is missing something required."""


def parse(text: str, source: str = ".env") -> dict[str, str]:
    """Parse `KEY=VALUE` lines; `#` starts a comment line; values may be quoted."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise EnvFileError(f"{source}:{number}: expected KEY=VALUE, got {raw.strip()[:60]!r}")
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def read(path: Path) -> dict[str, str]:
    """Read and parse an env file."""
    try:
        return parse(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise EnvFileError(f"cannot read {path}: {exc.strerror}") from exc


def is_secret(name: str) -> bool:
    """True for variables that hold a generated secret."""
    return name.endswith(SECRET_SUFFIXES)


def new_secret(length: int = 32) -> str:
    """A random secret of letters and digits: safe unquoted in shells, URLs and YAML."""
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(length))


def fill_secrets(template: str, overrides: dict[str, str] | None = None) -> str:
    """Return the template text with every empty secret filled and `overrides` applied.

    Comments and order are kept, so the generated file documents itself like the example.
    """
    overrides = dict(overrides or {})
    out: list[str] = []
    for raw in template.splitlines():
        match = _LINE.match(raw)
        if match is None or raw.lstrip().startswith("#"):
            out.append(raw)
            continue
        key, value = match.groups()
        if key in overrides:
            value = overrides.pop(key)
        elif not value and is_secret(key):
            value = new_secret()
        out.append(f"{key}={value}")
    out.extend(f"{key}={value}" for key, value in overrides.items())
    return "\n".join(out) + "\n"


def ensure(env_path: Path, example_path: Path, overrides: dict[str, str] | None = None) -> bool:
    """Create `env_path` from the example if it does not exist; returns True if created.

    The file is created readable by its owner only, since it holds every secret of the lab.
    An existing file is never rewritten: users edit it, and secrets must stay stable.
    """
    if env_path.exists():
        return False
    text = fill_secrets(example_path.read_text(encoding="utf-8"), overrides)
    env_path.parent.mkdir(parents=True, exist_ok=True)
    env_path.touch(mode=0o600)
    env_path.write_text(text, encoding="utf-8")
    return True


def read_with_defaults(path: Path, example_path: Path) -> dict[str, str]:
    """`path`'s values, with the example's documented default for each setting it lacks.

    A setting added to the example after this `.env` was made takes its default this way; a
    secret has no default and stays missing.
    """
    example = read(example_path)
    return {**{k: v for k, v in example.items() if not is_secret(k)}, **read(path)}


def add_new_secrets(env_path: Path, example_path: Path) -> list[str]:
    """Append to an existing `env_path` each secret the example declares and it lacks.

    A newer version of the lab may need a new secret; the file's own lines are kept as they are.
    Returns the names added.
    """
    values = read(env_path)
    example = read(example_path)
    added = [name for name in example if is_secret(name) and name not in values and not example[name]]
    if added:
        text = env_path.read_text(encoding="utf-8")
        lines = "".join(f"{name}={new_secret()}\n" for name in added)
        env_path.write_text(
            text + ("" if text.endswith("\n") or not text else "\n") + lines, encoding="utf-8"
        )
    return added


def missing_secrets(values: dict[str, str], example: dict[str, str]) -> list[str]:
    """Names of secrets declared in the example that are absent or empty in `values`."""
    return [name for name in example if is_secret(name) and not values.get(name)]
