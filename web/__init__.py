"""The lab portal: MQTT ingest into PostgreSQL, with live values in the browser.

Served by ``gunicorn --worker-class gevent --workers 1 'web:create_app()'``;
see :func:`web.app.create_app`. Importing this package loads nothing else, so tools that need
only a part of it (``python -m web.users``) start quickly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["create_app"]


def create_app(*args: Any, **kwargs: Any) -> Flask:
    """Build the portal (see :func:`web.app.create_app`)."""
    from web.app import create_app as build  # noqa: PLC0415 - deferred so `import web` stays light

    return build(*args, **kwargs)
