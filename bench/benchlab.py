"""The lab a benchmark measures: the running one of an ``.env`` file, or a new one on free ports."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labctl.config import (  # noqa: E402 - after the repository is on sys.path
    MAX_REPLICAS,
    LabConfig,
    new_instance,
    remove_instance,
)
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


def replica_counts(text: str) -> tuple[int, ...]:
    """``--replicas``: portal replica counts separated by commas (``1,2``), each a lab of its own."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of counts such as 1,2") from None
    if any(not 1 <= count <= MAX_REPLICAS for count in counts):
        raise argparse.ArgumentTypeError(f"replica counts go from 1 to {MAX_REPLICAS}, not {text!r}")
    if len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"{text!r} names a count twice")
    return counts


def portal_services(replicas: int) -> tuple[str, ...]:
    """The services that make the portal of a lab with ``replicas`` portal processes, in start
    order: ``web`` alone, or Redis, ``web-1`` ... ``web-N`` and the front (HAProxy on PORTAL_PORT).
    """
    if replicas == 1:
        return ("web",)
    return ("redis", *(f"web-{number}" for number in range(1, replicas + 1)), "front")


def portal_urls(config: LabConfig) -> dict[str, str]:
    """Each portal process of the lab by name, at its own address (not through the front):
    ``web`` on PORTAL_PORT, or ``web-i`` on PORTAL_REPLICA_PORT + i - 1.
    """
    if config.replicas == 1:
        return {"web": f"http://127.0.0.1:{config.port('PORTAL_PORT')}"}
    first = config.port("PORTAL_REPLICA_PORT")
    return {
        f"web-{number}": f"http://127.0.0.1:{first + number - 1}" for number in range(1, config.replicas + 1)
    }
