"""Logging for ``hub serve``: plain lines, or one JSON object per line (``--log-format json``) for collectors."""

from __future__ import annotations

import logging
from typing import Literal

LogFormat = Literal["text", "json"]
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _not_startup_failure(record: logging.LogRecord) -> bool:
    # amqtt logs its failed start with a traceback; the hub reports the same failure as one line
    return record.getMessage() != "Broker startup failed"


def configure_logging(log_format: LogFormat, level: str = "INFO") -> None:
    """Send every logger to stderr in ``log_format``: the hub's at ``level``, libraries' warnings and errors."""
    handler = logging.StreamHandler()
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(_TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("hub").setLevel(level)
    logging.getLogger("amqtt.broker").addFilter(_not_startup_failure)
