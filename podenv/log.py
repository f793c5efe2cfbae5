"""Logging for people (one readable line) and for RunPod's log view (JSON lines).

Every record may carry structured fields in ``extra={"fields": {...}}``. A JSON line carries
them all, after the keys every line has (`LOG_KEYS`, the worker's too: `worker/layout.py`
mirrors them). A text line is for a person: the message, which says what matters, and only
the fields the call names in ``extra={"text_fields": (...)}`` (a report's path, say).
"""

import json
import logging
import sys
import time

from podenv.settings import LOG_FORMAT

LOG_FORMATS = ("text", "json")
_ROOT = "podenv"
LOG_KEYS = ("ts", "level", "logger", "msg")


def timestamp(record: logging.LogRecord) -> str:
    """UTC to the millisecond, e.g. 2026-12-01T23:10:00.123Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        values = (timestamp(record), record.levelname.lower(), record.name, record.getMessage())
        entry = dict(zip(LOG_KEYS, values, strict=True))
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = record.getMessage()
        fields = getattr(record, "fields", {})
        shown = [f"{key}={fields[key]}" for key in getattr(record, "text_fields", ()) if key in fields]
        if shown:
            line += " " + " ".join(shown)
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
