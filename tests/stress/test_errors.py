"""One family of errors for the stress tool, and the exit status each gives the command line."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import stress
from stress.behaviours import BehaviourError
from stress.check import CheckError
from stress.cli.main import exit_status
from stress.errors import ScenarioError, StressError, UsageError
from stress.thingsboard import TbError
from stress.viewers import ViewersError, ViewersInputError


def test_every_error_the_tool_raises_is_one_of_its_family() -> None:
    outside = []
    for module in pkgutil.walk_packages(stress.__path__, "stress."):
        if module.name.endswith("__main__"):
            continue
        loaded = importlib.import_module(module.name)
        for name, value in vars(loaded).items():
            if (
                inspect.isclass(value)
                and issubclass(value, Exception)
                and value.__module__ == loaded.__name__
                and not name.startswith("_")
                and not issubclass(value, StressError)
            ):
                outside.append(f"{loaded.__name__}.{name}")
    assert outside == []


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ScenarioError("--devices must be 1 or more"), 2),
        (BehaviourError("unknown behaviour"), 2),
        (ViewersInputError("no room"), 2),
        (CheckError("cannot connect"), 1),
        (ViewersError("refused"), 1),
        # A ThingsBoard answer's HTTP status is its own attribute, not the exit status
        (TbError("not found", status=404), 1),
        (TbError("no answer", status=0), 1),
        (FileExistsError("runs/x exists"), 2),
        (PermissionError("cannot write"), 1),
    ],
)
def test_the_exit_status_says_whose_fault_it_is(error: StressError | OSError, status: int) -> None:
    assert exit_status(error) == status
    assert isinstance(error, OSError) or isinstance(error, UsageError) == (status == 2)
