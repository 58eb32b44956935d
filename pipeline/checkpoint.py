"""The checkpoint: one SQLite file (WAL) that makes every run resumable and exactly-once.

A mutation's intent (row, event, idempotency key) is committed before the request leaves, and
its answer right after, so a run killed at any instant resumes with the very same keys. Rows are
identified by content (row key), so a sheet edited between runs still lines up.
"""

from __future__ import annotations

import hashlib
import heapq
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

from pipeline.checkpoint_file import open_checkpoint, use_wal
from pipeline.checkpoint_schema import (
    INDEXES_SQL,
    REPORT_COLUMNS,
    SCHEMA_VERSION,
    as_is,
    correction_row,
    dumps,
    loads,
    neutralised,
    problem_row,
    report_key,
)
from pipeline.errors import CheckpointError
from pipeline.model import (
    PERMANENT,
    SUCCESS,
    UNRESOLVED,
    Correction,
    RowProblem,
    Status,
)
from pipeline.timeutil import utcnow


def workspace_id(token: str | None) -> str:
    """A stable, non-reversible name for the workspace: a hash of the public API key part."""
    if not token:
        return ""
    api_key = token.split(".", 1)[0]
    return hashlib.sha256(("workspace:" + api_key).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Intent:
    """A mutation committed to the checkpoint before it is sent."""

    row_key: str
    event_id: str
    idempotency_key: str
    timestamp: str
    merge_mode: str
    attributes_after: Mapping[str, Any]
    attributes_before: Mapping[str, Any] | None
    status: Status
    attempts: int = 0
    intent_at: str = ""
    seq: int = 0
    note: str | None = None


@dataclass(frozen=True)
class RowState:
    """What the checkpoint knows of a row when a run meets it again."""

    status: Status
    intents: tuple[Intent, ...]


@dataclass
class Registration:
    """The result of registering one batch: what still needs work, and counts."""

    todo: list[tuple[Correction, RowState | None]]
    new: int = 0
    done: int = 0
    invalid: int = 0
    duplicate: int = 0
    skipped: int = 0


class Checkpoint:
    """Open (or create) a checkpoint file. Refuses files of another version or target."""

    def __init__(self, path: Path | str, *, create: bool = True) -> None:
        self.path = Path(path)
        self._last_commit = time.monotonic()
        try:
            self.db = open_checkpoint(self.path, create=create)
            try:
                self._check_existing()
                use_wal(self.db)
                self.db.executescript(INDEXES_SQL)
            except BaseException:
                self.db.close()
                raise
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(
                f"{self.path} is not a usable checkpoint ({exc}). Move it aside to start over, "
                "or point --checkpoint at the right file."
            ) from None

    # -- identity -----------------------------------------------------------------------

    def _check_existing(self) -> None:
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master")}
        if "meta" not in tables or self.meta("schema_version") is None:
            raise CheckpointError(
                f"{self.path} is an SQLite file but not a corrections checkpoint; refusing to "
                "touch it. Point --checkpoint at another path."
            )
        version = self.meta("schema_version")
        if version != str(SCHEMA_VERSION):
            raise CheckpointError(
                f"{self.path} has checkpoint schema version {version}; this corrections "
                f"understands version {SCHEMA_VERSION}. Use the matching corrections release."
            )

    def bind_namespace(self, namespace: str) -> None:
        """Tie the checkpoint to one key namespace (DESIGN §5): its keys, kept for resuming,
        belong to that key space, so another namespace needs another checkpoint. A checkpoint
        made before the namespace was recorded counts as the default namespace ""."""
        known = self.meta("key_namespace")
        if known is None:
            used = self.db.execute("SELECT 1 FROM runs LIMIT 1").fetchone() is not None
            known = "" if used else namespace
            with self.transaction():
                self._set_meta("key_namespace", known)
        if known != namespace:
            def shown(ns: str) -> str:
                return repr(ns) if ns else "the default (none)"
            raise CheckpointError(
                f"{self.path} holds keys of key namespace {shown(known)}, not "
                f"{shown(namespace)}; one checkpoint cannot mix key spaces (its rows would be "
                "resumed under keys of the other). Nothing was sent. To start a fresh key space "
                "give this run a new --checkpoint; to resume, use --key-namespace as before."
            )

    def bind_target(self, api_url: str, workspace: str) -> None:
        """Tie the checkpoint to one API and workspace; refuse to resume against another."""
        known_url, known_ws = self.meta("api_url"), self.meta("workspace")
        if known_url is None:
            self._set_meta("api_url", api_url)
            self._set_meta("workspace", workspace)
            return
        if known_url != api_url:
            raise CheckpointError(
                f"{self.path} belongs to runs against {known_url}, not {api_url}. Resuming "
                "against another API would resend everything; use another --checkpoint."
            )
        if known_ws and workspace and known_ws != workspace:
            raise CheckpointError(
                f"{self.path} belongs to another workspace (another API key). Use the token "
                "of the workspace it was made for, or another --checkpoint."
            )

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def close(self) -> None:
        self.commit()
        self.db.close()

    # -- transactions -------------------------------------------------------------------
    #
    # Intents are committed at once (they must be durable before a request leaves).
    # Outcomes and row statuses are written in the open transaction and committed with the
    # next intent, or at least every quarter second: losing them to a SIGKILL only means
    # the next run resends under the same keys, and the API replays its first answer.

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

    # -- runs ---------------------------------------------------------------------------

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

    def current_generation(self) -> int:
        return int(self.meta("generation") or 0)

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

    # -- rows ---------------------------------------------------------------------------

    def register(self, items: Sequence[Correction | RowProblem], generation: int,
                 run_id: str, *, retry_unresolved: bool = False) -> Registration:
        """Record one batch of sheet rows and return those that still need work.

        A row identical to one met earlier in this run (its key already carries this run's
        generation) is reported `duplicate` instead of being worked twice; the checkpoint
        remembers what was met, so memory stays flat however long the sheet.
        """
        keys = [it.row_key for it in items]
        known: dict[str, Status] = {}
        met: dict[str, int] = {}  # row key -> row number, for keys met earlier in this run
        for chunk_start in range(0, len(keys), 5000):
            chunk = keys[chunk_start:chunk_start + 5000]
            marks = ",".join("?" * len(chunk))
            for key, status, gen, number in self.db.execute(
                "SELECT row_key, status, generation, row_number FROM rows "
                f"WHERE row_key IN ({marks})", chunk
            ):
                known[key] = Status(status)
                if gen == generation:
                    met[key] = number
        now = utcnow().isoformat()
        reg = Registration(todo=[])
        inserts: list[tuple[Any, ...]] = []
        touches: list[tuple[Any, ...]] = []
        dups: list[tuple[Any, ...]] = []
        resume_keys: list[str] = []
        for it in items:
            if it.row_key in met:
                dups.append((generation, it.row_number, it.row_key, met[it.row_key]))
                reg.duplicate += 1
                continue
            met[it.row_key] = it.row_number
            status = known.get(it.row_key)
            if isinstance(it, RowProblem):
                reg.invalid += 1
                if status is None:
                    reg.new += 1
                inserts.append(problem_row(it, generation, run_id, now))
                continue
            if status is None:
                reg.new += 1
                inserts.append(correction_row(it, generation, run_id, now))
                reg.todo.append((it, None))
                continue
            touches.append((it.row_number, generation, it.row_key))
            if status in SUCCESS or status in PERMANENT or (
                status in UNRESOLVED and not retry_unresolved
            ):
                reg.done += 1
                if status not in SUCCESS:
                    reg.skipped += 1
                continue
            resume_keys.append(it.row_key)
            reg.todo.append((it, RowState(status, ())))
        with self.transaction():
            if inserts:
                self.db.executemany(
                    "INSERT OR REPLACE INTO rows (row_key, row_number, generation, status, "
                    "event_type, lookup_key, lookup_value, event_id, merge_mode, attributes, "
                    "spec, error, run_id, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    inserts,
                )
            if touches:
                self.db.executemany(
                    "UPDATE rows SET row_number = ?, generation = ? WHERE row_key = ?", touches
                )
            if dups:
                self.db.executemany(
                    "INSERT OR REPLACE INTO duplicate_rows (generation, row_number, row_key, "
                    "first_row_number) VALUES (?, ?, ?, ?)",
                    dups,
                )
        if resume_keys:
            intents = self.intents_for(resume_keys)
            reg.todo = [
                (c, RowState(st.status, tuple(intents.get(c.row_key, ()))) if st else None)
                for c, st in reg.todo
            ]
        return reg

    def set_row_status(self, row_key: str, status: Status, run_id: str,
                       error: str | None = None) -> None:
        self._deferred(
            "UPDATE rows SET status = ?, error = ?, run_id = ?, updated_at = ? WHERE row_key = ?",
            (status.value, error, run_id, utcnow().isoformat(), row_key),
        )

    # -- mutations ----------------------------------------------------------------------

    def intents_for(self, row_keys: Iterable[str]) -> dict[str, list[Intent]]:
        out: dict[str, list[Intent]] = {}
        keys = list(row_keys)
        for start in range(0, len(keys), 5000):
            chunk = keys[start:start + 5000]
            marks = ",".join("?" * len(chunk))
            for r in self.db.execute(
                "SELECT row_key, event_id, idempotency_key, timestamp, merge_mode, "
                "attributes_after, attributes_before, status, attempts, intent_at, seq "
                f"FROM mutations WHERE row_key IN ({marks}) ORDER BY row_key, seq",
                chunk,
            ):
                out.setdefault(r[0], []).append(Intent(
                    row_key=r[0], event_id=r[1], idempotency_key=r[2], timestamp=r[3],
                    merge_mode=r[4], attributes_after=loads(r[5]),
                    attributes_before=loads(r[6]), status=Status(r[7]), attempts=r[8],
                    intent_at=r[9] or "", seq=r[10],
                ))
        return out

    def key_owner(self, idempotency_key: str) -> tuple[str, str, str, str, Status] | None:
        """(row_key, event_id, attributes_after, merge_mode, status) of the key's holder: one
        whose change landed (applied, unchanged, verified, mismatch) if any, else the first."""
        row = self.db.execute(
            "SELECT row_key, event_id, attributes_after, merge_mode, status FROM mutations "
            "WHERE idempotency_key = ? ORDER BY status IN "
            "('applied', 'unchanged', 'verified', 'mismatch') DESC, rowid LIMIT 1",
            (idempotency_key,),
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3], Status(row[4]))

    def record_intents(self, intents: Sequence[Intent], run_id: str) -> None:
        """Commit what is about to be sent (or decided without sending) in one transaction."""
        now = utcnow().isoformat()
        with self.transaction():
            self.db.executemany(
                "INSERT INTO mutations (row_key, event_id, seq, idempotency_key, timestamp, "
                "merge_mode, attributes_before, attributes_after, status, attempts, intent_at, "
                "run_id, note, row_ref) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "(SELECT rowid FROM rows WHERE row_key = ?)) "
                "ON CONFLICT (row_key, event_id) DO UPDATE SET "
                "attributes_before = COALESCE(excluded.attributes_before, attributes_before), "
                "status = excluded.status, run_id = excluded.run_id",
                [
                    (i.row_key, i.event_id, i.seq, i.idempotency_key, i.timestamp, i.merge_mode,
                     dumps(i.attributes_before), dumps(i.attributes_after), i.status.value,
                     i.attempts, i.intent_at or now, run_id, i.note, i.row_key)
                    for i in intents
                ],
            )

    def record_outcome(self, row_key: str, event_id: str, status: Status, *, run_id: str,
                       attempts: int, mutation_id: str | None = None,
                       http_status: int | None = None, error: str | None = None,
                       note: str | None = None) -> None:
        applied_at = utcnow().isoformat() if status is Status.APPLIED else None
        self._deferred(
            "UPDATE mutations SET status = ?, mutation_id = COALESCE(?, mutation_id), "
            "http_status = ?, attempts = ?, error = ?, note = COALESCE(?, note), "
            "applied_at = COALESCE(?, applied_at), run_id = ? "
            "WHERE row_key = ? AND event_id = ?",
            (status.value, mutation_id, http_status, attempts, error, note, applied_at, run_id,
             row_key, event_id),
        )

    def record_note(self, row_key: str, event_id: str, note: str) -> None:
        self._deferred("UPDATE mutations SET note = ? WHERE row_key = ? AND event_id = ?",
                        (note, row_key, event_id))

    def record_outcome_status(self, row_key: str, event_id: str, status: Status, run_id: str,
                              note: str) -> None:
        """Verification's verdict on an applied mutation.

        The mutation keeps its mutation_id and the run that applied it (what `revert --run`
        undoes); the verifying run is named in the note.
        """
        self._deferred(
            "UPDATE mutations SET status = ?, note = ? WHERE row_key = ? AND event_id = ?",
            (status.value, f"{note} ({run_id})" if run_id else note, row_key, event_id),
        )

    def refresh_intent_time(self, row_key: str, event_id: str) -> None:
        self._deferred(
            "UPDATE mutations SET intent_at = ? WHERE row_key = ? AND event_id = ?",
            (utcnow().isoformat(), row_key, event_id),
        )

    # -- reading back -------------------------------------------------------------------

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
            "FROM mutations m JOIN rows r ON r.row_key = m.row_key "
            "WHERE r.generation != ? AND m.status IN ('applied', 'verified', 'mismatch') "
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
