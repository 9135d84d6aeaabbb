"""How a turnlog process writes its logs: JSON lines or text, each line with what it is about.

Every line has its time (UTC), level, logger and message, and the fields bound in `kernel.log_context` when it was
written (request id, org, conversation, run, trace id); the access log's lines add the method, path, route, status
and duration. JSON (one object per line, for a log collector) is the default unless stderr is a terminal; text
keeps the same fields as `name=value` after the message. uvicorn's loggers write through the same handler.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

from kernel import log_context

LOG_FORMATS = ("json", "text")

# The attributes every LogRecord has; anything else on a record came as `extra=` and is a field of the line.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
# uvicorn's own extras: its coloured copy of the message.
_IGNORED_EXTRAS = frozenset({"color_message", "turnlog_fields"})


def default_log_format(stream: TextIO | None = None) -> str:
    """JSON lines, unless the logs go to a terminal where a person reads them."""
    stream = stream or sys.stderr
    return "text" if stream.isatty() else "json"


class ContextFields(logging.Filter):
    """Puts the log context bound where the record was written onto it (as `turnlog_fields`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "turnlog_fields"):
            record.turnlog_fields = dict(log_context.current())
        return True


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields: dict[str, object] = dict(getattr(record, "turnlog_fields", {}))
    for name, value in vars(record).items():
        if name not in _RECORD_ATTRIBUTES and name not in _IGNORED_EXTRAS:
            fields[name] = value
    return fields


class JsonLines(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, the context and extra fields, the exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class Text(logging.Formatter):
    """`time LEVEL logger: message name=value ...`, for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        if not fields:
            return text
        head, newline, rest = text.partition("\n")  # keep a traceback below the line
        suffix = " ".join(f"{name}={value}" for name, value in fields.items())
        return f"{head} {suffix}{newline}{rest}"


def configure_logging(level: str, *, log_format: str | None = None, stream: TextIO | None = None) -> None:
    """Send every logger's records (turnlog's, uvicorn's, the libraries') to `stream` (stderr) in `log_format`."""
    log_format = log_format or default_log_format(stream)
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}; choose {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFields())
    handler.setFormatter(JsonLines() if log_format == "json" else Text())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
