"""What the ``stress`` commands share on their command lines: value types, defaults from
``STRESS_*`` environment variables, and ``--debug``.

Every flag can also be set with an environment variable named after it: ``--connect-rate``
is ``STRESS_CONNECT_RATE``. A flag on the command line wins over the variable. A bad value,
from either, is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Collection

from stress.behaviours import BehaviourError, load

ENV_PREFIX = "STRESS_"


# ---------------------------------------------------------------------------- value types


def _number(text: str, kind: Callable[[str], float | int], what: str) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    """An integer of 1 or more."""
    value = int(_number(text, int, "a whole number"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def count(text: str) -> int:
    """An integer of 0 or more."""
    value = int(_number(text, int, "a whole number"))
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def seconds(text: str) -> float:
    """A number of seconds, 0 or more."""
    value = float(_number(text, float, "a number of seconds"))
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value:g} must be 0 or more seconds")
    return value


def positive_seconds(text: str) -> float:
    """A number of seconds, more than 0."""
    value = float(_number(text, float, "a number of seconds"))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value:g} must be more than 0 seconds")
    return value


def factor(text: str) -> float:
    """A multiplier, more than 0."""
    value = float(_number(text, float, "a number"))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value:g} must be more than 0")
    return value


def any_share(text: str) -> float:
    """A share, 0 to 1."""
    value = float(_number(text, float, "a number between 0 and 1"))
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value:g} must be 0 to 1")
    return value


def share(text: str) -> float:
    """A share, more than 0 and at most 1."""
    value = float(_number(text, float, "a number between 0 and 1"))
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value:g} must be more than 0 and at most 1")
    return value


def processes(text: str) -> int:
    """``auto`` (one per core) or a count of 1 or more."""
    if text.strip().lower() == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    return positive_int(text)


def cluster(text: str) -> str:
    """``local:N`` or a Dask scheduler's address (``tcp://HOST:PORT``)."""
    from stress.cluster import address  # noqa: PLC0415 - the cluster module is needed only here

    try:
        return address(text.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cpus(text: str) -> tuple[int, ...]:
    """A CPU list such as ``1``, ``0,2`` or ``2-3`` (as taskset takes it), sorted; empty: all."""
    found: set[int] = set()
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        low, _, high = part.partition("-")
        if not (low.isdigit() and (not high or high.isdigit())) or (high and int(high) < int(low)):
            raise argparse.ArgumentTypeError(f"{text!r} is not a CPU list such as 1, 0,2 or 2-3")
        found.update(range(int(low), int(high or low) + 1))
    return tuple(sorted(found))


def moments(text: str) -> tuple[float, ...]:
    """Seconds, comma-separated: ``30`` or ``30,90``, sorted."""
    found = [seconds(part) for part in text.split(",") if part.strip()]
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r} is not seconds such as 30 or 30,90")
    return tuple(sorted(found))


def port(text: str) -> int:
    """A TCP port."""
    value = int(_number(text, int, "a port number"))
    if not 0 < value < 65_536:
        raise argparse.ArgumentTypeError(f"{value} is not a port (1..65535)")
    return value


def qos(text: str) -> int:
    """0, 1 or 2."""
    if text not in ("0", "1", "2"):
        raise argparse.ArgumentTypeError(f"{text!r} is not 0, 1 or 2")
    return int(text)


def behaviour(text: str) -> str:
    """A built-in behaviour or ``module:Class``, checked now."""
    try:
        load(text)
    except BehaviourError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


# ---------------------------------------------------------------------------- parser


def env_default(parser: argparse.ArgumentParser, action: argparse.Action) -> None:
    """Make the ``STRESS_<DEST>`` variable the default of ``action``, converted and checked."""
    name = ENV_PREFIX + action.dest.upper()
    action.help = f"{action.help} [{name}]" if action.help else f"[{name}]"
    raw = os.environ.get(name)
    if raw is None:
        return
    if isinstance(action, argparse._StoreTrueAction):
        if raw.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
            parser.error(f"{name}={raw!r} is not a yes/no value")
        action.default = raw.lower() in ("1", "true", "yes", "on")
        return
    convert = action.type if callable(action.type) else str
    try:
        value = convert(raw)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        parser.error(f"{name}={raw!r}: {exc}")
    if action.choices is not None and value not in action.choices:
        parser.error(f"{name}={raw!r}: choose one of {', '.join(map(str, action.choices))}")
    action.default = value


def env_defaults(parser: argparse.ArgumentParser, dests: Collection[str] | None = None) -> None:
    """Give every flag of ``parser`` (or those whose ``dest`` is in ``dests``) its ``STRESS_*``
    variable."""
    for action in parser._actions:
        if action.dest != "help" and (dests is None or action.dest in dests):
            env_default(parser, action)


def add_debug(group: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--debug``: tracebacks and debug logging (read by :func:`stress.cli.main.main`)."""
    group.add_argument("--debug", action="store_true", help="tracebacks and debug logging")
