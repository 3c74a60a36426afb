"""Units of measure by attribute name: the portal's units file, under what devices send.

A payload may name its unit (``{"value": 21.5, "unit": "°C"}``); an attribute's unit is the one
named by its newest value that named one (``attributes.unit``). An attribute that never named one
takes the unit of its name in ``web/units.json`` (``{"temperature": "°C", ...}``; keys starting
with ``_`` are comments), or has none.
"""

from __future__ import annotations

import json
from pathlib import Path

from web.settings import SettingsError
from wire.payloads import MAX_UNIT_CHARS

UNITS_FILE = Path(__file__).with_name("units.json")


def load_units(path: Path = UNITS_FILE) -> dict[str, str]:
    """The units file as ``{attribute: unit}``.

    Raises:
        SettingsError: the file cannot be read or is not an object of short texts (one line).
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read the units file: {exc}") from None
    if not isinstance(document, dict):
        raise SettingsError(f"{path}: the units file must be a JSON object {{attribute: unit}}")
    units = {}
    for attr, unit in document.items():
        if attr.startswith("_"):
            continue
        if not isinstance(unit, str) or not 1 <= len(unit) <= MAX_UNIT_CHARS or not unit.isprintable():
            raise SettingsError(
                f"{path}: the unit of {attr!r} must be 1 to {MAX_UNIT_CHARS} printable characters"
            )
        units[attr] = unit
    return units


def unit_of(attr: str, sent: str | None, units: dict[str, str]) -> str | None:
    """The unit to show for ``attr``: the one its device sent, else the file's, else none."""
    return sent if sent is not None else units.get(attr)
