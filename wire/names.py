"""The lab's one rule for names: rooms, devices, attributes and alarm types.

A name is one topic level (``<root>/<room>/<device>/<attr>``, ``alarms/<room>/<device>/<type>``)
that ends up in PostgreSQL, in URLs and in every viewer's browser. Readings, alarms, the API, live
subscriptions and the stress tool all check names with :func:`name_problem`; the Node-RED rules
carry the same rule in JavaScript (``nodered/flows.json``, kept in agreement by a test). A valid
name:

* is 1 to :data:`MAX_NAME_CHARS` characters long;
* holds no ``/`` (the level separator), ``+`` or ``#`` (MQTT wildcards);
* holds no control characters (C0, C1, DEL: PostgreSQL text cannot hold NUL, terminals obey the
  rest), no invisible formatting characters (zero-width spaces and joiners, bidirectional marks
  and overrides, the byte order mark: they make look-alike names), no line or paragraph
  separators, no lone surrogates;
* does not begin or end with white space (``" kitchen"`` and ``"kitchen"`` would be two rooms).

Only the standard library is imported here, so the stress tool can use this module without the
portal's dependencies.
"""

from __future__ import annotations

import re
import unicodedata

#: Longest name, in characters.
MAX_NAME_CHARS = 200
#: Characters a name never holds: separator and wildcards, and, by Unicode category, controls
#: (Cc), formatting characters (Cf), line and paragraph separators (Zl, Zp), surrogates (Cs).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
# One quick search for names that are plain ASCII letters, digits and common punctuation: most are.
_PLAIN = re.compile(r"[A-Za-z0-9_.:@~=, ()\[\]{}<>!?$%&*;'\"|\\^`-]+")


def name_problem(name: str) -> str | None:
    """Say, in a few words, what makes `name` unusable as a name; ``None`` when it is fine."""
    if not name:
        return "empty name"
    if len(name) > MAX_NAME_CHARS:
        return f"longer than {MAX_NAME_CHARS} characters"
    if name[0].isspace() or name[-1].isspace():
        return "begins or ends with white space"
    return None if _PLAIN.fullmatch(name) else _character_problem(name)


def _character_problem(name: str) -> str | None:
    for char in name:
        if char in "/+#":
            return f"{char!r} in name"
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            return f"invisible or control character U+{ord(char):04X} in name"
    return None


def is_valid_name(name: str) -> bool:
    """True when `name` follows the rule."""
    return name_problem(name) is None
