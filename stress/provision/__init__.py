"""Device accounts on a target: ``stress provision`` and ``stress deprovision``."""

from __future__ import annotations

from stress.errors import StressError


class ProvisionError(StressError):
    """Provisioning cannot go on; the message is one line that says what to do."""
