"""What the checkpoint file holds: its schema, and how rows and values are encoded in it.

`pipeline.checkpoint` does the work on it; this module is the layout, kept apart so the
format can be read in one place (and versioned with `SCHEMA_VERSION`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.model import Correction, RowProblem, Status

#: Version 2: the delivery tables joined the schema (`pipeline.checkpoint_migrate` upgrades 1).
SCHEMA_VERSION = 2

#: The audit report's columns, in order (`pipeline.report` writes them).
REPORT_COLUMNS = (
    "row_number", "row_key", "event_type", "lookup_key", "lookup_value", "event_id",
    "timestamp", "idempotency_key", "merge_mode", "status", "mutation_id", "http_status",
    "attempts", "error", "attributes_before", "attributes_after", "applied_at", "run_id",
)

#: The tables `SCHEMA_SQL` creates (a file holding other tables is not a checkpoint).
CORE_TABLES = ("meta", "runs", "rows", "duplicate_rows", "mutations", "delivery_batches",
               "deliveries")

# Deliveries to targets that take batches (mParticle): the `target` column says whose.
# `delivery_batches` holds each batch's exact body, committed before it is sent, so a resend
# after any crash carries the very same bytes; `deliveries` is one per (target, row, event).
DELIVERY_SQL = """
CREATE TABLE IF NOT EXISTS delivery_batches (
    target TEXT NOT NULL, batch_id TEXT NOT NULL, endpoint TEXT NOT NULL,
    user_key TEXT NOT NULL, body TEXT NOT NULL, ord INTEGER NOT NULL, status TEXT NOT NULL,
    http_status INTEGER, attempts INTEGER NOT NULL DEFAULT 0, error TEXT, created_at TEXT,
    done_at TEXT, run_id TEXT,
    PRIMARY KEY (target, batch_id)
);
CREATE INDEX IF NOT EXISTS delivery_batches_by_status ON delivery_batches (target, status, ord);
CREATE TABLE IF NOT EXISTS deliveries (
    target TEXT NOT NULL, row_key TEXT NOT NULL, event_key TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0, event_id TEXT, event_time TEXT, source_message_id TEXT,
    batch_id TEXT, endpoint TEXT, status TEXT NOT NULL, http_status INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0, error TEXT, payload TEXT, intent_at TEXT,
    accepted_at TEXT, run_id TEXT,
    PRIMARY KEY (target, row_key, event_key)
);
CREATE INDEX IF NOT EXISTS deliveries_by_batch ON deliveries (target, batch_id);
CREATE INDEX IF NOT EXISTS deliveries_by_message ON deliveries (target, source_message_id);
"""

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, command TEXT, started_at TEXT, finished_at TEXT,
    sheet TEXT, sheet_fingerprint TEXT, generation INTEGER, exit_code INTEGER,
    requests INTEGER DEFAULT 0, retries INTEGER DEFAULT 0,
    rows_new INTEGER DEFAULT 0, rows_done INTEGER DEFAULT 0, rows_gone INTEGER DEFAULT 0,
    options TEXT
);
CREATE TABLE IF NOT EXISTS rows (
    row_key TEXT PRIMARY KEY, row_number INTEGER NOT NULL, generation INTEGER NOT NULL,
    status TEXT NOT NULL, event_type TEXT, lookup_key TEXT, lookup_value TEXT,
    event_id TEXT, merge_mode TEXT, attributes TEXT, spec TEXT, error TEXT,
    run_id TEXT, updated_at TEXT
);
CREATE INDEX IF NOT EXISTS rows_by_number ON rows (generation, row_number);
CREATE TABLE IF NOT EXISTS duplicate_rows (
    generation INTEGER NOT NULL, row_number INTEGER NOT NULL, row_key TEXT NOT NULL,
    first_row_number INTEGER, PRIMARY KEY (generation, row_number)
);
CREATE TABLE IF NOT EXISTS mutations (
    row_key TEXT NOT NULL, event_id TEXT NOT NULL, seq INTEGER NOT NULL,
    row_ref INTEGER,
    idempotency_key TEXT NOT NULL, timestamp TEXT, merge_mode TEXT,
    attributes_before TEXT, attributes_after TEXT, status TEXT NOT NULL,
    mutation_id TEXT, http_status INTEGER, attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT, note TEXT, intent_at TEXT, applied_at TEXT, run_id TEXT,
    PRIMARY KEY (row_key, event_id)
);
CREATE INDEX IF NOT EXISTS mutations_by_key ON mutations (idempotency_key);
""" + DELIVERY_SQL

# Indexes that make a rerun of a finished million-row sheet cheap (counts without scans);
# also added to checkpoints made before they existed.
INDEXES_SQL = """
CREATE INDEX IF NOT EXISTS rows_by_status ON rows (generation, status);
CREATE INDEX IF NOT EXISTS mutations_by_status ON mutations (status);
CREATE INDEX IF NOT EXISTS mutations_by_row ON mutations (row_ref, seq);
"""


def dumps(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def report_key(report: Path | str) -> str:
    text = str(report)
    return text if "://" in text else str(Path(text).resolve())


def neutralised(expr: str) -> str:
    """SQL for `expr` as a spreadsheet shows text (`textsafe.neutralise_cell`, registered on
    the connection as `neutralise`); called only for the rare cell that needs it."""
    return (f"CASE WHEN substr({expr}, 1, 1) IN ('=', '+', '-', '@', char(9), char(13)) "
            f"OR instr({expr}, char(10)) OR instr({expr}, char(13)) "
            f"THEN neutralise({expr}) ELSE {expr} END")


def as_is(expr: str) -> str:
    return expr


def problem_row(p: RowProblem, generation: int, run_id: str, now: str) -> tuple[Any, ...]:
    cells = p.cells
    return (
        p.row_key, p.row_number, generation, Status.INVALID.value,
        _text(cells.get("event_type")), _text(cells.get("lookup_key")),
        _text(cells.get("lookup_value")), _text(cells.get("event_id")),
        _text(cells.get("merge_mode")), None, None, str(p), run_id, now,
    )


def correction_row(c: Correction, generation: int, run_id: str, now: str) -> tuple[Any, ...]:
    return (
        c.row_key, c.row_number, generation, Status.PENDING.value, c.event_type, c.lookup_key,
        c.lookup_value, c.event_id, c.merge_mode, dumps(dict(c.attributes)), None, None,
        run_id, now,
    )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text[:500]
