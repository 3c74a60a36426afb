"""The launcher's errors: one family, each a one-line message that says what to do.

``./lab`` turns any :class:`LabError` into that line on stderr and exit status 1: a bad ``.env``
(``EnvFileError``, ``ConfigError``), an install that cannot finish (``InstallError``), a service
that will not start or answer (``ServiceError``, ``PortalError``).
"""

from __future__ import annotations


class LabError(Exception):
    """A failure of the launcher the user can act on; the message is one line."""
