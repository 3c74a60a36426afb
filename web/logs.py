"""Logging for the portal: single-line ``key=value`` records on stdout."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s thread=%(threadName)s %(message)s"


class SingleLineFormatter(logging.Formatter):
    """Keeps each record on one line: tracebacks are appended with escaped newlines."""

    def format(self, record: logging.LogRecord) -> str:
        """Format the record, then fold any line breaks (tracebacks, odd messages) into ``\\n``."""
        return super().format(record).replace("\r", "\\r").replace("\n", "\\n")


def configure_logging(level: int = logging.INFO) -> None:
    """Send the portal's logs to stdout, once, unless the host program already set logging up.

    Only the ``web`` logger tree gets a handler, so a host that configured the root logger
    (pytest, a custom gunicorn log config) keeps receiving the records its own way.
    """
    logger = logging.getLogger("web")
    logger.setLevel(level)
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(SingleLineFormatter(_FORMAT))
    logger.addHandler(handler)
