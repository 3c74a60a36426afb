"""Telemetry topics: ``<root>/<room>/<device>/<attr>``.

A topic is parsed once, at the edge, into a frozen :class:`Topic`; inner code trusts its fields.
Each level must be non-empty UTF-8 without ``+``, ``#`` or ``/`` (the MQTT wildcards and the
separator). Control characters are refused too: the names end up in PostgreSQL ``text`` columns
(which cannot hold NUL) and in the browser, where invisible characters make look-alike names.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

from web.rejections import Reason, Rejection

#: Number of levels in a telemetry topic, root included.
TOPIC_DEPTH = 4
_FORBIDDEN = frozenset("+#")
# Everything level_problem() refuses, for one search over the whole topic: wildcards, C0 and C1
# controls and DEL (category Cc), lone surrogates (Cs).
_SUSPECT = re.compile("[+#\x00-\x1f\x7f-\x9f\ud800-\udfff]")
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


def level_problem(level: str) -> str | None:
    """Say what makes one topic level unusable as a name, or ``None`` when it is fine."""
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
    if "" in levels or _SUSPECT.search(text):
        for level in levels:
            problem = level_problem(level)
            if problem is not None:
                return Rejection(Reason.TOPIC_LEVEL, problem)
    if levels[0] != root:
        return Rejection(Reason.TOPIC_ROOT, f"root is not {root!r}")
    return Topic(root=levels[0], room=levels[1], device=levels[2], attr=levels[3])
