"""Portal viewers: browsers' worth of Socket.IO clients, timed against the broker's own delivery."""

from __future__ import annotations

from stress.errors import StressError, UsageError


class ViewersError(StressError):
    """The portal or the broker refused, or could not be reached; the message is one line."""


class ViewersInputError(ViewersError, UsageError):
    """What was asked cannot be watched (a room that does not exist, say); the message is one line."""
