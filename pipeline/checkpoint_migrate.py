"""Upgrading a checkpoint written by an earlier release to this release's schema.

A checkpoint is an operator's record of what was applied, so an upgrade must never leave half
of one: every step from the file's version to `SCHEMA_VERSION`, and the new version number,
are committed in one transaction. A crash or a failing disk part-way leaves the file exactly
as the earlier release wrote it, and the next writing run upgrades it again. Commands that
only read a checkpoint read an earlier version as it is (`readable_version`) and never
upgrade it, so looking at a file does not lock the earlier release out of it.

A new version is one more step in `STEPS` and its tables in `TABLES`.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

from pipeline.checkpoint_schema import CORE_TABLES, DELIVERY_SQL, SCHEMA_VERSION
from pipeline.errors import CheckpointWriteError

log = logging.getLogger("corrections")

Step = Callable[[sqlite3.Connection], None]


def add_delivery_tables(db: sqlite3.Connection) -> None:
    """1 → 2: the delivery tables join the schema. Version 1 made them on a target's first
    use, with this very layout, so a version 1 file may hold them already (kept as they are)."""
    _execute_all(db, DELIVERY_SQL)


#: The step that upgrades a file of version N to N + 1.
STEPS: dict[int, Step] = {
    1: add_delivery_tables,
}

#: The tables a file of each version must hold to be a checkpoint at all.
TABLES: dict[int, tuple[str, ...]] = {
    1: ("meta", "runs", "rows", "duplicate_rows", "mutations"),
    SCHEMA_VERSION: CORE_TABLES,
}


def readable_version(text: str | None) -> int | None:
    """The version a `schema_version` value names, if this release can read (or upgrade) it."""
    try:
        version = int(text or "")
    except ValueError:
        return None
    return version if version == SCHEMA_VERSION or version in STEPS else None


def upgrade(db: sqlite3.Connection, path: Path, found: int) -> None:
    """Bring the checkpoint at `path` from version `found` to `SCHEMA_VERSION`, all or nothing.

    `db` is in autocommit mode (no transaction open); it is left so.
    """
    if found == SCHEMA_VERSION:
        return
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            for version in range(found, SCHEMA_VERSION):
                STEPS[version](db)
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                       (str(SCHEMA_VERSION),))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (a full disk)
                db.execute("ROLLBACK")
            raise
    except (sqlite3.Error, OSError) as exc:
        raise CheckpointWriteError(
            f"cannot upgrade the checkpoint {path} from schema version {found} to "
            f"{SCHEMA_VERSION}: {exc}; nothing was changed and nothing was sent. Free some "
            "space (or make it writable) and run the same command again.") from None
    log.info("checkpoint %s upgraded from schema version %d to %d", path, found,
             SCHEMA_VERSION, extra={"event": "checkpoint_upgraded"})


def _execute_all(db: sqlite3.Connection, script: str) -> None:
    """Each statement of `script` inside the open transaction (`executescript` would commit
    it first)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)
