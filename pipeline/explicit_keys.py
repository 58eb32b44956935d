"""Which explicit `idempotency_key`s the sheet gives to more than one row.

The rule must not depend on row order (a reordered sheet on a fresh checkpoint must send the
same keys, or the API answers 409): a key that one row of the sheet uses, for one event, is
sent bare; a key that several distinct rows use is suffixed per (event, change) for *all* of
them. Knowing that takes one pass over the sheet before anything is sent; it is made only when
the sheet has an `idempotency_key` column, and the counts live in a temporary SQLite table so
memory stays flat however long the sheet.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from pipeline.model import Correction, RowProblem

_SCHEMA = ("CREATE TEMP TABLE IF NOT EXISTS sheet_keys (key TEXT NOT NULL, row_key TEXT NOT "
           "NULL, PRIMARY KEY (key, row_key)) WITHOUT ROWID")


class ExplicitKeys:
    """The sheet's explicit keys and how many distinct rows name each (after `learn`)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._learned = False
        self._cache: dict[str, bool] = {}

    def learn(self, batches: Iterable[list[Correction | RowProblem]]) -> None:
        """Read the whole sheet once; identical rows (one row key) count once."""
        self._db.execute(_SCHEMA)
        self._db.execute("DELETE FROM sheet_keys")
        for batch in batches:
            pairs = [(c.idempotency_key, c.row_key) for c in batch
                     if isinstance(c, Correction) and c.idempotency_key is not None]
            if pairs:
                self._db.executemany(
                    "INSERT OR IGNORE INTO sheet_keys (key, row_key) VALUES (?, ?)", pairs)
        self._learned = True
        self._cache.clear()

    def shared(self, key: str) -> bool:
        """True when more than one distinct row of the sheet names `key`."""
        if not self._learned:
            return False
        if key not in self._cache:
            if len(self._cache) > 50_000:
                self._cache.clear()
            n = self._db.execute("SELECT COUNT(*) FROM (SELECT 1 FROM sheet_keys WHERE key = ? "
                                 "LIMIT 2)", (key,)).fetchone()[0]
            self._cache[key] = n > 1
        return self._cache[key]
