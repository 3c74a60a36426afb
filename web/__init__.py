"""The lab portal: MQTT ingest into PostgreSQL, with live values in the browser.

Served by ``gunicorn --worker-class gthread --workers 1 --threads 100 'web:create_app()'``;
see :func:`web.app.create_app`.
"""

from web.app import create_app

__all__ = ["create_app"]
