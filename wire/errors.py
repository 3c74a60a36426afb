"""Errors of the wire contract: what one side sent that the contract does not allow.

``ProtocolError`` (MQTT framing) and ``ScopeError`` (a live subscription) are a :class:`WireError`.
"""

from __future__ import annotations


class WireError(Exception):
    """Something on the wire breaks the contract; the message is one line naming what."""
