"""Each package's errors are one family: the launcher's, the portal's, the wire contract's."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import labctl
import web
import wire
from labctl.errors import LabError
from web.errors import PortalError
from wire.errors import WireError

#: Internal signals that never leave their module (not errors a user or client sees).
INTERNAL = {"web.writer._Stopping", "web.retention._RowsArrivedError", "wire.payloads._Refused"}


@pytest.mark.parametrize(("package", "family"), [(labctl, LabError), (web, PortalError), (wire, WireError)])
def test_every_error_of_a_package_is_one_of_its_family(package: ModuleType, family: type[Exception]) -> None:
    outside = []
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if module.name.endswith("__main__") or ".migrations" in module.name:
            continue
        loaded = importlib.import_module(module.name)
        for name, value in vars(loaded).items():
            where = f"{loaded.__name__}.{name}"
            if (
                inspect.isclass(value)
                and issubclass(value, Exception)
                and value.__module__ == loaded.__name__
                and not issubclass(value, family)
                and where not in INTERNAL
            ):
                outside.append(where)
    assert outside == []
