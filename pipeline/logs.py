"""Logging to stderr as text for people or one JSON object per line for log shippers."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, TextIO

from pipeline.redact import scrub_urls
from pipeline.textsafe import printable

LOGGER = "corrections"
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


#: The run a log line belongs to; bound by whoever starts the run (CLI, library API).
_RUN_ID: ContextVar[str | None] = ContextVar("corrections_run_id", default=None)
#: With --quiet, JSON logs still carry these (and every warning and error): a cron run's record.
ALWAYS = frozenset({"run_start", "run_end", "summary", "config", "api", "metrics"})


def bind_run_id(run_id: str | None) -> Token[str | None]:
    """Stamp `run_id` on every later log line of this context (reset with `unbind_run_id`)."""
    return _RUN_ID.set(run_id)


def unbind_run_id(token: Token[str | None]) -> None:
    _RUN_ID.reset(token)


def current_run_id() -> str | None:
    return _RUN_ID.get()


class JsonFormatter(logging.Formatter):
    """One object per line with `ts`, `level`, `run_id` and `event` always present."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "run_id": getattr(record, "run_id", None) or _RUN_ID.get(),
            "event": getattr(record, "event", None) or "message",
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = value
        return scrub_urls(json.dumps(out, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    """One line per record for people; sheet and server text in it is escaped (`printable`),
    so a value can neither drive the terminal nor forge a line of its own."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"corrections: {prefix}{printable(scrub_urls(record.getMessage()))}"


def setup_logging(fmt: str = "text", *, quiet: bool = False, verbose: bool = False,
                  stream: TextIO | None = None) -> logging.Logger:
    logger = logging.getLogger(LOGGER)
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    if quiet and fmt == "json":  # the run's start, end and summary still go to the log
        level = logging.INFO
        handler.addFilter(_quiet_json)
    logger.setLevel(level)
    # retries and throttling: every one for machines (json) and -v; a person sees the summary
    chatty = fmt == "json" or verbose
    logging.getLogger(LOGGER + ".retry").setLevel(
        logging.INFO if chatty and not quiet else logging.WARNING)
    return logger


def _quiet_json(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or getattr(record, "event", None) in ALWAYS
