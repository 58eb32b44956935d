"""The checkpoint's SQLite handle: metadata, and when writes are committed.

Intents are committed at once (they must be durable before a request leaves). Outcomes and
row statuses are written in the open transaction and committed with the next intent, or at
least every quarter second: losing them to a SIGKILL only means the next run resends under
the same keys, and the API replays its first answer.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class StoreBase:
    """What every part of the checkpoint builds on: the connection and its transactions."""

    path: Path
    db: sqlite3.Connection
    _last_commit: float

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def close(self) -> None:
        self.commit()
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Commit this work now, together with any deferred writes before it."""
        if not self.db.in_transaction:
            self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            if self.db.in_transaction:  # SQLite already rolled back after a full disk
                self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        self._last_commit = time.monotonic()

    def _deferred(self, sql: str, params: Sequence[Any]) -> None:
        if not self.db.in_transaction:
            self.db.execute("BEGIN")
        self.db.execute(sql, params)

    def commit(self) -> None:
        if self.db.in_transaction:
            self.db.execute("COMMIT")
        self._last_commit = time.monotonic()

    def commit_if_due(self, seconds: float = 0.25) -> None:
        if self.db.in_transaction and time.monotonic() - self._last_commit >= seconds:
            self.commit()

    def current_generation(self) -> int:
        return int(self.meta("generation") or 0)

