"""The errors of the stress tool: one family, each a one-line message for the user.

Every error a command can meet derives from :class:`StressError`, so the command line has one
place that turns them into a line on stderr and an exit status: 2 for input that cannot be
used (:class:`UsageError`: a flag, a scenario file, a name), 1 for the rest (a server that
refused, a run folder that cannot be read). Each part of the tool names its own, beside the
code that raises it: ``CheckError``, ``ClusterError``, ``ConnectError``, ``ControlError``,
``ProvisionError``, ``ReportError``, ``SteerError``, ``TbError``, ``ViewerError``,
``ViewersError``; ``BehaviourError``, ``ScenarioError`` and ``ViewersInputError`` are usage
errors.
"""

from __future__ import annotations


class StressError(Exception):
    """A failure the user can act on; its message is one line saying what to do."""

    #: The exit status of a command that ends on it.
    exit_status = 1


class UsageError(StressError):
    """Input that cannot be used: a flag, a file, a name."""

    exit_status = 2


class ScenarioError(UsageError, ValueError):
    """A setting that cannot be run; the message is one line naming the setting."""
