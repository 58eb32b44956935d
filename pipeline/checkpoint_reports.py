"""Reading the checkpoint back: counts by status, and the audit report's lines in order."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from operator import itemgetter
from typing import Any

from pipeline.checkpoint_schema import (
    REPORT_COLUMNS,
    as_is,
    neutralised,
)
from pipeline.checkpoint_store import StoreBase
from pipeline.model import (
    Status,
)


class ReadBack(StoreBase):
    """Queries that never write: what the summary, `status` and the report show."""


    def status_counts(self, generation: int | None = None) -> dict[str, int]:
        """Rows by status for a generation (default: the latest sheet)."""
        gen = self.current_generation() if generation is None else generation
        counts: dict[str, int] = {}
        for status, n in self.db.execute(
            "SELECT status, COUNT(*) FROM rows WHERE generation = ? GROUP BY status", (gen,)
        ):
            counts[status] = n
        dups = self.db.execute(
            "SELECT COUNT(*) FROM duplicate_rows WHERE generation = ?", (gen,)
        ).fetchone()[0]
        if dups:
            counts[Status.DUPLICATE.value] = counts.get(Status.DUPLICATE.value, 0) + dups
        return counts

    def mutation_counts(self, generation: int | None = None) -> dict[str, int]:
        gen = self.current_generation() if generation is None else generation
        if not self.db.execute("SELECT 1 FROM rows WHERE generation != ? LIMIT 1",
                               (gen,)).fetchone():
            # every row is of this sheet: count from the status index alone
            return dict(self.db.execute(
                "SELECT status, COUNT(*) FROM mutations GROUP BY status").fetchall())
        return dict(self.db.execute(
            "SELECT m.status, COUNT(*) FROM mutations m JOIN rows r ON r.row_key = m.row_key "
            "WHERE r.generation = ? GROUP BY m.status", (gen,)
        ).fetchall())

    def report_tuples(self, generation: int | None = None, *, for_csv: bool = False,
                      include_gone: bool = True) -> Iterator[tuple[Any, ...]]:
        """The sheet's lines (`sheet_tuples`), then every mutation once applied for a row
        that is no longer in the sheet (`gone_tuples`): the audit trail never forgets."""
        gen = self.current_generation() if generation is None else generation
        yield from self.sheet_tuples(gen, for_csv=for_csv)
        if include_gone:
            yield from self.gone_tuples(gen, for_csv=for_csv)

    def gone_tuples(self, generation: int, *,
                    for_csv: bool = False) -> Iterator[tuple[Any, ...]]:
        """Mutations applied (or verified) for rows the sheet no longer holds (edited or
        removed since): `row_number` empty, their status and mutation_id kept, and a note."""
        n = neutralised if for_csv else as_is
        note = ("'the row is no longer in the sheet' || CASE WHEN COALESCE(m.error, m.note) "
                "IS NULL THEN '' ELSE '; ' || COALESCE(m.error || '; ' || m.note, m.error, "
                "m.note) END")
        yield from self.db.execute(
            "SELECT NULL, r.row_key, " + n("r.event_type") + ", " + n("r.lookup_key")
            + ", " + n("r.lookup_value") + ", " + n("m.event_id") + ", " + n("m.timestamp")
            + ", " + n("m.idempotency_key") + ", " + n("m.merge_mode") + ", "
            + n("m.status") + ", " + n("m.mutation_id") + ", m.http_status, m.attempts, "
            + n(note) + ", " + n("m.attributes_before") + ", " + n("m.attributes_after")
            + ", " + n("m.applied_at") + ", " + n("m.run_id") + " "
            # from the rows of other sheets (an index range each side of this one), so a
            # rerun of a finished million-row sheet does not walk its own mutations
            "FROM rows r CROSS JOIN mutations m ON m.row_key = r.row_key "
            "WHERE (r.generation < ?1 OR r.generation > ?1) "
            "AND m.status IN ('applied', 'verified', 'mismatch') "
            "ORDER BY m.applied_at, m.rowid",
            (generation,),
        )

    def sheet_tuples(self, generation: int | None = None, *,
                     for_csv: bool = False) -> Iterator[tuple[Any, ...]]:
        """Every line of the audit report as a tuple in `REPORT_COLUMNS` order, sheet order.

        Streamed from the file: rows in `row_number` order straight from their index (no
        sort of the whole sheet), duplicate rows merged in. `for_csv`: text that came from
        the sheet or the API and looks like a spreadsheet formula gets a leading quote.
        """
        gen = self.current_generation() if generation is None else generation
        n = neutralised if for_csv else as_is
        error = ("CASE WHEN m.note IS NULL THEN COALESCE(m.error, r.error) "
                 "WHEN COALESCE(m.error, r.error) IS NULL THEN m.note "
                 "ELSE COALESCE(m.error, r.error) || '; ' || m.note END")
        lines = self.db.execute(
            # every text column is neutralised: any of them may hold sheet or server text
            "SELECT r.row_number, r.row_key, " + n("r.event_type") + ", " + n("r.lookup_key")
            + ", " + n("r.lookup_value") + ", " + n("COALESCE(m.event_id, r.event_id)")
            + ", " + n("m.timestamp") + ", " + n("m.idempotency_key")
            + ", " + n("COALESCE(m.merge_mode, r.merge_mode)") + ", "
            + n("COALESCE(m.status, r.status)") + ", "
            + n("m.mutation_id") + ", m.http_status, COALESCE(m.attempts, 0), " + n(error)
            + ", " + n("m.attributes_before") + ", "
            + n("COALESCE(m.attributes_after, r.attributes)") + ", "
            + n("m.applied_at") + ", " + n("COALESCE(m.run_id, r.run_id)") + " "
            "FROM rows r INDEXED BY rows_by_number "
            # joined on the row's rowid: rows sit in sheet order, so the mutations are read
            # in nearly sequential order instead of by random row key
            "LEFT JOIN mutations m INDEXED BY mutations_by_row ON m.row_ref = r.rowid "
            "WHERE r.generation = ? ORDER BY r.row_number, m.seq",
            (gen,),
        )
        if not self.db.execute("SELECT 1 FROM duplicate_rows WHERE generation = ? LIMIT 1",
                               (gen,)).fetchone():
            yield from lines
            return
        dups = self.db.execute(
            "SELECT d.row_number, d.row_key, " + n("r.event_type") + ", " + n("r.lookup_key")
            + ", " + n("r.lookup_value") + ", " + n("r.event_id")
            + ", NULL, NULL, " + n("r.merge_mode") + ", 'duplicate', NULL, NULL, 0, "
            "'same content as row ' || d.first_row_number, NULL, " + n("r.attributes")
            + ", NULL, " + n("r.run_id") + " FROM duplicate_rows d "
            "JOIN rows r ON r.row_key = d.row_key "
            "WHERE d.generation = ? ORDER BY d.row_number",
            (gen,),
        )
        yield from heapq.merge(lines, dups, key=itemgetter(0))

    def report_rows(self, generation: int | None = None) -> Iterator[dict[str, Any]]:
        """Every line of the sheet's rows as a dict, in sheet order (see `gone_rows`)."""
        for line in self.sheet_tuples(generation):
            yield dict(zip(REPORT_COLUMNS, line, strict=True))

    def gone_rows(self, generation: int) -> Iterator[dict[str, Any]]:
        """`gone_tuples` as dicts."""
        for line in self.gone_tuples(generation):
            yield dict(zip(REPORT_COLUMNS, line, strict=True))

    def applied_mutations(self) -> Iterator[dict[str, Any]]:
        """Applied (or verified) mutations of the latest sheet, with what verify needs."""
        gen = self.current_generation()
        cur = self.db.execute(
            "SELECT m.row_key, m.event_id, m.timestamp, m.attributes_after, m.merge_mode, "
            "m.status, r.event_type, r.lookup_key, r.lookup_value, r.spec, "
            "m.attributes_before, r.event_id AS sheet_event_id "
            "FROM mutations m JOIN rows r ON r.row_key = m.row_key "
            "WHERE r.generation = ? AND m.status IN ('applied', 'verified', 'mismatch')",
            (gen,),
        )
        cols = [d[0] for d in cur.description]
        for r in cur:
            yield dict(zip(cols, r, strict=True))

