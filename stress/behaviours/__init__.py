"""Device behaviours: the built-ins, and loading a user's class with ``module:Class``."""

from __future__ import annotations

import importlib

from stress.behaviours.base import Behaviour, DeviceInfo, Value
from stress.behaviours.builtin import BUILTIN
from stress.errors import UsageError
from stress.scenario import valid_level


class BehaviourError(UsageError, ValueError):
    """A behaviour that cannot be loaded; one line naming it and what is wrong."""


def load(spec: str) -> type[Behaviour]:
    """A built-in by name (``thermostat``) or a class by ``module:Class``."""
    if spec in BUILTIN:
        return BUILTIN[spec]
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise BehaviourError(f"unknown behaviour {spec!r}: use one of {', '.join(BUILTIN)} or module:Class")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BehaviourError(f"cannot import {module_name!r} for --behaviour: {first_line}") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, Behaviour):
        raise BehaviourError(f"{spec!r} is not a subclass of stress.behaviours.Behaviour")
    attributes = getattr(cls, "attributes", ())
    if (
        not isinstance(attributes, tuple)
        or not attributes
        or not all(isinstance(a, str) and valid_level(a) for a in attributes)
    ):
        raise BehaviourError(f"{spec!r} must name its attributes (a tuple of topic levels)")
    return cls


__all__ = ["BUILTIN", "Behaviour", "BehaviourError", "DeviceInfo", "Value", "load"]
