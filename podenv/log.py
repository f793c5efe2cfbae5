"""Logging for people (one readable line) and for RunPod's log view (JSON lines).

Every record may carry structured fields in ``extra={"fields": {...}}``; the text format
appends them as ``key=value``, the JSON format merges them into the object.
"""

import json
import logging
import sys
import time

from podenv.settings import LOG_FORMAT

LOG_FORMATS = ("text", "json")
_ROOT = "podenv"


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = record.getMessage()
        # Flat fields read well after the sentence; nested ones are for the JSON format.
        fields = {k: v for k, v in getattr(record, "fields", {}).items() if not isinstance(v, dict | list)}
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        if record.levelno >= logging.WARNING:
            line = f"{record.levelname.lower()}: {line}"
        return line


def configure(log_format: str | None = None, verbose: bool = False) -> None:
    """Send podenv's logs to stderr in the chosen format (default: ``$PODENV_LOG_FORMAT`` or text)."""
    chosen = log_format or LOG_FORMAT.read() or "text"
    if chosen not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not '{chosen}'")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter() if chosen == "json" else TextFormatter())
    root = logging.getLogger(_ROOT)
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith(_ROOT) else f"{_ROOT}.{name}")
