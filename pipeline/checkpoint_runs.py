"""The checkpoint's runs: each run's record, sheet generations, and report freshness."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.checkpoint_schema import (
    dumps,
    report_key,
)
from pipeline.checkpoint_store import StoreBase
from pipeline.model import (
    UNRESOLVED,
    Status,
)
from pipeline.timeutil import utcnow


class RunRecords(StoreBase):
    """Runs and sheet generations (a generation is one version of the sheet met by a run)."""


    def start_run(self, run_id: str, command: str, sheet: str, fingerprint: str,
                  options: Mapping[str, Any], *, same_sheet: bool = False) -> int:
        """Open a run and a new sheet generation; rows met in this run join it.

        `same_sheet`: the sheet is the one the current generation holds completely (see
        `sheet_complete`), so the run keeps that generation instead of re-registering it.
        """
        generation = int(self.meta("generation") or 0) + (0 if same_sheet else 1)
        with self.transaction():
            self._set_meta("generation", str(generation))
            self._set_meta("sheet_fingerprint", fingerprint)
            self.db.execute(
                "INSERT INTO runs (run_id, command, started_at, sheet, sheet_fingerprint, "
                "generation, options) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, command, utcnow().isoformat(), sheet, fingerprint, generation,
                 dumps(dict(options))),
            )
        return generation

    def finish_run(self, run_id: str, *, exit_code: int, requests: int, retries: int,
                   rows_new: int, rows_done: int, rows_gone: int) -> None:
        self.db.execute(
            "UPDATE runs SET finished_at = ?, exit_code = ?, requests = ?, retries = ?, "
            "rows_new = ?, rows_done = ?, rows_gone = ? WHERE run_id = ?",
            (utcnow().isoformat(), exit_code, requests, retries, rows_new, rows_done, rows_gone,
             run_id),
        )

    def mark_complete(self, generation: int, digest: str) -> None:
        """Every row of the sheet with this digest is registered in this generation."""
        with self.transaction():
            self._set_meta("complete_generation", str(generation))
            self._set_meta("complete_sheet", digest)

    def note_change(self, run_id: str) -> None:
        """This run may have changed rows: reports written before are out of date."""
        with self.transaction():
            self._set_meta("state", run_id)

    def report_stamp(self, report: Path | str) -> str | None:
        """The file stamp of `report` as last written, if written from the present state."""
        recorded = self.meta(f"report:{report_key(report)}")
        if recorded is None:
            return None
        state, _, stamp = recorded.partition("|")
        return stamp if state == (self.meta("state") or "") else None

    def record_report(self, report: Path | str, stamp: str) -> None:
        with self.transaction():
            self._set_meta(f"report:{report_key(report)}", f"{self.meta('state') or ''}|{stamp}")

    def sheet_complete(self, digest: str) -> bool:
        return (self.meta("complete_sheet") == digest
                and self.meta("complete_generation") == str(self.current_generation()))

    def rows_to_work(self, generation: int, *, retry_unresolved: bool = False) -> int:
        """Rows a rerun would work on: pending and failed (and unresolved, if asked)."""
        wanted = [Status.PENDING.value, Status.FAILED.value]
        if retry_unresolved:
            wanted += [s.value for s in UNRESOLVED]
        marks = ",".join("?" * len(wanted))
        return self.db.execute(
            f"SELECT COUNT(*) FROM rows WHERE generation = ? AND status IN ({marks})",
            (generation, *wanted),
        ).fetchone()[0]


    def last_run(self) -> dict[str, Any] | None:
        cur = self.db.execute("SELECT * FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1")
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cur.description], row, strict=True))

    def rows_gone(self, generation: int) -> int:
        """Rows of earlier sheets that the current sheet no longer holds."""
        return self.db.execute(
            "SELECT COUNT(*) FROM rows WHERE generation < ?", (generation,)
        ).fetchone()[0]

