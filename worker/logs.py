"""The worker's log lines: text, or JSON lines (``PODENV_LOG_FORMAT=json``) for RunPod's log view.

The same schema as podenv's (`podenv/log.py`): JSON lines start with `LOG_KEYS` and carry
every field; a text line is the message and only the fields the call names in ``show``.
"""

import json
import logging
import sys
import time
from typing import Any

from worker import settings
from worker.layout import LOG_KEYS


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        values = (stamp, record.levelname.lower(), record.name, record.getMessage())
        line = dict(zip(LOG_KEYS, values, strict=True))
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        shown = [f"{key}={fields[key]}" for key in getattr(record, "text_fields", ()) if key in fields]
        line = f"{record.levelname.lower()} {record.name}: {record.getMessage()}"
        return f"{line} [{' '.join(shown)}]" if shown else line


def configure() -> logging.Logger:
    handler = logging.StreamHandler(sys.stdout)
    json_lines = settings.read("PODENV_LOG_FORMAT") == "json"
    handler.setFormatter(_JsonFormatter() if json_lines else _TextFormatter())
    logger = logging.getLogger("podenv.worker")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def event(
    logger: logging.Logger, message: str, level: int = logging.INFO, show: tuple[str, ...] = (), **fields: Any
) -> None:
    """One log line with structured ``fields`` (an ``event`` name among them); ``show``: the
    fields a text line carries too."""
    logger.log(level, message, extra={"fields": fields, "text_fields": show})
