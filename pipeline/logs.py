"""Logging to stderr as text for people or one JSON object per line for log shippers."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from pipeline.redact import scrub_urls
from pipeline.textsafe import printable

LOGGER = "corrections"
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
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
    logger.setLevel(level)
    # retries and throttling: every one for machines (json) and -v; a person sees the summary
    chatty = fmt == "json" or verbose
    logging.getLogger(LOGGER + ".retry").setLevel(
        logging.INFO if chatty and not quiet else logging.WARNING)
    return logger
