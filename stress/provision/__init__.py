"""Device accounts on a target: ``stress provision`` and ``stress deprovision``."""


class ProvisionError(Exception):
    """Provisioning cannot go on; the message is one line that says what to do."""
