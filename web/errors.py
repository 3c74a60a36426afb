"""The portal's errors: one family, each a one-line message.

A request that cannot be answered (``ParamError``: 400, ``Unavailable``: 503, ``RemovalRefused``),
an account that cannot be made (``AccountError``) and settings that cannot be used
(``SettingsError``) are all a :class:`PortalError`. (Internal signals that never leave their
module are not.)
"""

from __future__ import annotations


class PortalError(Exception):
    """A failure the portal says in one line to the client or the operator."""
