"""The checkpoint: one SQLite file (WAL) that makes every run resumable and exactly-once.

A mutation's intent (row, event, idempotency key) is committed before the request leaves, and
its answer right after, so a run killed at any instant resumes with the very same keys. Rows are
identified by content (row key), so a sheet edited between runs still lines up.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import checkpoint_migrate as migrate
from pipeline.checkpoint_file import open_checkpoint, use_wal
from pipeline.checkpoint_reports import ReadBack
from pipeline.checkpoint_runs import RunRecords
from pipeline.checkpoint_schema import (
    INDEXES_SQL,
    SCHEMA_VERSION,
    correction_row,
    dumps,
    loads,
    problem_row,
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

    @property
    def chain(self) -> str:
        """What orders it against other items: its event (the engine sends one event's
        items in sheet order, a later one only after the earlier one settled)."""
        return self.event_id


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


class Checkpoint(RunRecords, ReadBack):
    """Open (or create) a checkpoint file; upgrade an earlier schema (when writing), refuse a
    later one or another target."""

    def __init__(self, path: Path | str, *, create: bool = True,
                 upgrade: bool | None = None) -> None:
        """`create`: make the file when there is none. `upgrade` (default: as `create`, i.e.
        for commands that write): bring a file of an earlier schema version to this one;
        otherwise it is read as it is."""
        self.path = Path(path)
        self._last_commit = time.monotonic()
        try:
            self.db = open_checkpoint(self.path, create=create)
            try:
                version = self._check_existing()
                use_wal(self.db)
                if create if upgrade is None else upgrade:
                    migrate.upgrade(self.db, self.path, version)
                    version = SCHEMA_VERSION
                #: The file's schema version (older than `SCHEMA_VERSION` only when read as is).
                self.schema_version = version
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

    def _check_existing(self) -> int:
        """The file's schema version, once it is known to be a checkpoint this release reads."""
        tables = {r[0] for r in self.db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables or self.meta("schema_version") is None:
            raise self._not_a_checkpoint()
        text = self.meta("schema_version")
        version = migrate.readable_version(text)
        if version is None:
            raise CheckpointError(
                f"{self.path} has checkpoint schema version {text}; this corrections "
                f"understands version {SCHEMA_VERSION}. Use the matching corrections release."
            )
        if not set(migrate.TABLES[version]) <= tables:
            raise self._not_a_checkpoint()
        return version

    def _not_a_checkpoint(self) -> CheckpointError:
        return CheckpointError(
            f"{self.path} is an SQLite file but not a corrections checkpoint; refusing to "
            "touch it. Point --checkpoint at another path."
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
