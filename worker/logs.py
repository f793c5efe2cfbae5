"""The worker's log lines: text, or JSON lines (``PODENV_LOG_FORMAT=json``) for RunPod's log view."""

import json
import logging
import os
import sys
import time
from typing import Any


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        return json.dumps(line, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        flat = [f"{key}={value}" for key, value in fields.items() if not isinstance(value, dict | list)]
        line = f"{record.levelname.lower()} {record.name}: {record.getMessage()}"
        return f"{line} [{' '.join(flat)}]" if flat else line


def configure() -> logging.Logger:
    handler = logging.StreamHandler(sys.stdout)
    json_lines = os.environ.get("PODENV_LOG_FORMAT", "text") == "json"
    handler.setFormatter(_JsonFormatter() if json_lines else _TextFormatter())
    logger = logging.getLogger("podenv.worker")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def event(logger: logging.Logger, message: str, level: int = logging.INFO, **fields: Any) -> None:
    """One log line with structured ``fields`` (an ``event`` name among them)."""
    logger.log(level, message, extra={"fields": fields})
