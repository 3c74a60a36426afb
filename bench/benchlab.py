"""The lab a benchmark measures: the running one of an ``.env`` file, or a new one on free ports."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labctl.config import LabConfig, new_instance, remove_instance  # noqa: E402 - after the repository is on sys.path
from labctl.lab import Lab  # noqa: E402


@contextmanager
def lab_instance(
    env_file: Path | None,
    prefix: str,
    *,
    services: tuple[str, ...] | None = None,
    overrides: dict[str, str] | None = None,
    keep: bool = False,
) -> Iterator[tuple[LabConfig, Lab | None]]:
    """The lab of ``env_file`` (its state in the ``data/`` folder beside it), as it runs, or a
    new one in a temporary folder named ``<prefix>...``: ``services`` (default: all) started on
    free ports with the ``.env`` ``overrides``, stopped and removed at the end (kept with ``keep``).
    """
    if env_file is not None:
        yield LabConfig.load(env_file, env_file.parent / "data"), None
        return
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    lab = Lab(new_instance(folder, **(overrides or {})))
    print("starting a lab instance ...")
    try:
        if services is None:
            lab.up()
        else:
            for name in services:
                lab.start(name)
        yield lab.config, lab
    finally:
        lab.down()
        if keep:
            print(f"kept the lab's state and logs in {folder}")
        else:
            remove_instance(folder)
