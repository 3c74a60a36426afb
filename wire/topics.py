"""Telemetry topics: ``<root>/<room>/<device>/<attr>``.

A topic is parsed once, at the edge, into a frozen :class:`Topic`; inner code trusts its fields.
The root must be ``TOPIC_ROOT``; room, device and attribute must be names by the lab's one rule
(:mod:`wire.names`: at most 200 characters, no wildcards, no control or invisible characters, no
white space at either end), the rule alarms, the API and the stress tool check too.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass

from wire.names import name_problem
from wire.rejections import Reason, Rejection

#: Number of levels in a telemetry topic, root included.
TOPIC_DEPTH = 4
_FORBIDDEN = frozenset("+#")
#: Distinct topics whose parse is remembered: a fleet repeats its topics, so most lookups hit.
CACHE_SIZE = 65_536
#: Longer topics are parsed every time, so the cache holds at most a few tens of MiB.
CACHE_TOPIC_MAX = 256


@dataclass(frozen=True, slots=True)
class Topic:
    """A valid telemetry topic, split into its named levels."""

    root: str
    room: str
    device: str
    attr: str

    @property
    def key(self) -> str:
        """``<room>/<device>/<attr>``: how the live page names a value."""
        return f"{self.room}/{self.device}/{self.attr}"

    def __str__(self) -> str:
        return f"{self.root}/{self.key}"


def _root_problem(level: str) -> str | None:
    """What makes a first level that is not the root unusable as any root, or ``None``."""
    if not level:
        return "empty level"
    if any(char in _FORBIDDEN for char in level):
        return "wildcard character in level"
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in level):
        return "control character in level"
    return None


def parse_topic(raw: bytes | bytearray | str, root: str) -> Topic | Rejection:
    """Parse a topic as received from the broker.

    Args:
        raw: the topic, as bytes (straight from the wire) or already decoded.
        root: the expected first level (``TOPIC_ROOT``).

    Returns:
        The :class:`Topic`, or a :class:`Rejection` saying why it is not a telemetry topic.
    """
    if isinstance(raw, bytearray):
        raw = bytes(raw)
    if len(raw) > CACHE_TOPIC_MAX:  # a topic may be 64 KiB long: never let those fill the cache
        return _parse_topic.__wrapped__(raw, root)
    return _parse_topic(raw, root)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _parse_topic(raw: bytes | str, root: str) -> Topic | Rejection:
    # Cached: both results are immutable, and the answer depends on nothing but the arguments.
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return Rejection(Reason.TOPIC_UTF8, "topic is not valid UTF-8")
    else:
        text = raw
    levels = text.split("/")
    if len(levels) != TOPIC_DEPTH:
        return Rejection(Reason.TOPIC_DEPTH, f"{len(levels)} levels, expected {TOPIC_DEPTH}")
    if levels[0] != root:
        problem = _root_problem(levels[0])
        if problem is not None:
            return Rejection(Reason.TOPIC_LEVEL, problem)
        return Rejection(Reason.TOPIC_ROOT, f"root is not {root!r}")
    for level in levels[1:]:
        problem = name_problem(level)
        if problem is not None:
            return Rejection(Reason.TOPIC_LEVEL, problem)
    return Topic(root=levels[0], room=levels[1], device=levels[2], attr=levels[3])
