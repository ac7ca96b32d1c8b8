"""Log formats shared by the CLI, the runner and the step workers: text for people, JSON lines
for log collectors (one object per line with time, level, logger, message and, when known,
the run id, step and attempt)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

__all__ = ["CONTEXT_FIELDS", "TEXT_FORMAT", "JsonFormatter", "formatter"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Record attributes (set with ``extra=`` or by a filter) copied into JSON lines.
CONTEXT_FIELDS = ("run_id", "step", "attempt")


class JsonFormatter(logging.Formatter):
    """One JSON object per record; exceptions go in ``exc_info`` as text."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: getattr(record, k) for k in CONTEXT_FIELDS if hasattr(record, k)})
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def formatter(log_format: str, text_format: str = TEXT_FORMAT) -> logging.Formatter:
    """The formatter for ``log_format`` (``text`` or ``json``)."""
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter(text_format, datefmt="%H:%M:%S")
