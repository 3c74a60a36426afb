"""The lock: uv.lock agrees with pyproject.toml, `locks/` is exactly its export, every install
reads only `locks/` with hashes checked, and a changed lock installs again."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from labctl import install
from labctl.config import ROOT

UV = ROOT / ".venv" / "bin" / "uv"


def _uv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(UV), *args, "--offline"], cwd=ROOT, capture_output=True, text=True, check=False, timeout=120
    )


def _requirements(text: str) -> list[str]:
    """The lines of an export without its header (which names the output file)."""
    return [line for line in text.splitlines() if not line.startswith("#")]


def test_uv_lock_agrees_with_pyproject() -> None:
    done = _uv("lock", "--check")
    assert done.returncode == 0, f"uv.lock is stale; run ./lab lock: {done.stderr}"


@pytest.mark.parametrize("name", sorted(install.LOCK_EXPORTS))
def test_each_lock_file_is_the_export_of_uv_lock(name: str) -> None:
    done = _uv(*install.export_command(name))
    assert done.returncode == 0, done.stderr
    committed = (ROOT / "locks" / f"{name}.txt").read_text()
    assert _requirements(committed) == _requirements(done.stdout), f"locks/{name}.txt: run ./lab lock"


@pytest.mark.parametrize("name", sorted(install.LOCK_EXPORTS))
def test_every_pin_is_exact_and_hashed(name: str) -> None:
    text = (ROOT / "locks" / f"{name}.txt").read_text()
    entries = re.split(r"\n(?=[A-Za-z])", "\n".join(_requirements(text)).strip())
    assert entries
    for entry in entries:
        assert re.match(r"^[A-Za-z0-9_.-]+==[^ ;\\]+", entry), entry
        assert "--hash=sha256:" in entry, entry


def test_the_extras_a_lock_holds() -> None:
    def names(lock: str) -> set[str]:
        pins = re.findall(r"^([A-Za-z0-9_.-]+)==", (ROOT / "locks" / f"{lock}.txt").read_text(), re.M)
        return {pin.lower() for pin in pins}

    assert {"gunicorn", "gevent", "sqlalchemy", "psycopg"} <= names("portal")
    assert {"aiohttp", "uvloop", "pyyaml", "requests", "flask"} <= names("stress")
    assert "gunicorn" not in names("stress") and "pytest" not in names("lab")
    assert names("lab") == names("portal") | names("stress")
    assert names("lab") < names("test") and "pytest" in names("test")
    assert names("build") == {"setuptools"}


def test_the_image_installs_from_the_lock() -> None:
    dockerfile = (ROOT / "web" / "Dockerfile").read_text()
    installs = [line.strip(" \\&") for line in dockerfile.splitlines() if "pip install" in line]
    assert installs == [
        "RUN pip install --no-cache-dir --require-hashes -r /tmp/locks/build.txt",
        "pip install --no-cache-dir --require-hashes -r /tmp/locks/portal.txt",
        "RUN pip install --no-cache-dir --no-deps --no-build-isolation -e .",
    ]
    assert "COPY locks/build.txt locks/portal.txt /tmp/locks/" in dockerfile


def test_a_changed_lock_installs_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A checkout whose lab lock holds one package; the stamp skips an unchanged lock and a
    changed one installs its new pins."""
    root = tmp_path / "checkout"
    (root / "locks").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "uv.lock"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "labctl", root / "labctl", ignore=shutil.ignore_patterns("__pycache__"))
    for name in install.LOCK_EXPORTS:
        shutil.copy(ROOT / "locks" / f"{name}.txt", root / "locks" / f"{name}.txt")
    lab_lock = (ROOT / "locks" / "lab.txt").read_text()
    idna = re.search(r"^idna==.*?(?=^\S)", lab_lock, re.M | re.S)
    assert idna is not None
    (root / "locks" / "lab.txt").write_text("")
    venv = tmp_path / "venv"

    def installed(package: str) -> str:
        done = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                f"import importlib.metadata as m; print(m.version({package!r}))",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip() if done.returncode == 0 else "absent"

    install.ensure_python_env(root, venv, "lab")
    assert "installed" in capsys.readouterr().out
    stamp = venv / ".lab-installed"
    first = stamp.read_text()
    assert first.split()[0] == install.lock_key(root)
    assert installed("iot-lab") == "0.1.0" and installed("idna") == "absent"

    install.ensure_python_env(root, venv, "lab")
    assert capsys.readouterr().out == "" and stamp.read_text() == first

    (root / "locks" / "lab.txt").write_text(idna[0])
    install.ensure_python_env(root, venv, "lab")
    assert "installed" in capsys.readouterr().out
    assert stamp.read_text().split()[0] == install.lock_key(root) != first.split()[0]
    assert installed("idna") == re.match(r"idna==([^ ;]+)", idna[0])[1]  # type: ignore[index]
