"""The example scenario files shipped with ``stress``, and how ``--scenario`` finds a file.

``--scenario`` takes a path, or the name of an example (``lab-morning``, or its file name
``lab-morning.yaml``), so the examples work from an installed package as well as from a
checkout. A file that exists always wins; a name (no ``/``) that is no file is looked up
among the examples. Anything else is one line naming the examples. The examples are package
data: they live beside this module in every install.
"""

from __future__ import annotations

from pathlib import Path

from stress.errors import ScenarioError

#: Where the examples are (inside the installed package).
EXAMPLES_DIR = Path(__file__).resolve().parent
#: File extensions of scenario files (YAML, or TOML by its extension).
SUFFIXES = (".yaml", ".yml", ".toml")


def examples() -> dict[str, Path]:
    """The shipped examples by name (file name without its extension), sorted."""
    found = (path for path in EXAMPLES_DIR.iterdir() if path.suffix in SUFFIXES and path.is_file())
    return {path.stem: path for path in sorted(found)}


def find(text: str) -> Path:
    """The scenario file ``--scenario text`` means: a file there, else an example of that name.

    Raises:
        ScenarioError: no such file nor example, or a folder; the message names the examples.
    """
    known = examples()
    listed = f"the examples are {', '.join(known)}" if known else "this install has no examples"
    shown = text if text.isprintable() and len(text) <= 80 else repr(text[:80])
    if not text.strip():
        raise ScenarioError(f"--scenario needs a file or the name of an example ({listed})")
    path = Path(text)
    kind = _kind(path)
    if kind == "folder":
        raise ScenarioError(f"--scenario {shown} is a folder, not a scenario file ({listed})")
    if kind == "file":
        return path
    if "/" not in text:
        stem = text.removesuffix(path.suffix) if path.suffix in SUFFIXES else text
        if stem in known and text in (stem, known[stem].name):
            return known[stem]
    raise ScenarioError(
        f"cannot read --scenario {shown}: no such file, nor an example of that name ({listed})"
    )


def _kind(path: Path) -> str:
    """``folder``, ``file`` (anything else that exists: the loader says if it cannot be read) or
    ``none``."""
    try:
        if path.is_dir():
            return "folder"
        return "file" if path.exists() else "none"
    except (OSError, ValueError):  # a name too long, or holding a NUL byte: no such file
        return "none"
