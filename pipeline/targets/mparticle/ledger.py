"""The mParticle side of the checkpoint: deliveries per (row, event) and the batches they ride.

Its tables belong to the checkpoint's schema (`pipeline.checkpoint_schema`, created with the
checkpoint; a checkpoint of an earlier release gains them when a run upgrades it):

* `delivery_batches` — one per batch: its `source_request_id` (`batch_id`), endpoint, exact
  body, status. Committed *before* the request leaves, so a resend after any crash sends the
  very same bytes and mParticle drops the duplicate.
* `deliveries` — one per (target, row, correction key): the `source_message_id`, which batch
  carries it, status, HTTP status, error. Rows that cannot be delivered (no user, over a limit,
  not resolved by Usermaven) get a placeholder with an empty key and no batch; placeholders
  are recomputed on every run, batch-backed deliveries are final and reused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.checkpoint import Checkpoint
from pipeline.errors import CheckpointError
from pipeline.targets import MPARTICLE
from pipeline.targets.mparticle.batching import Outgoing, PlannedBatch
from pipeline.timeutil import format_api, utcnow

#: A row's status from its deliveries': the first of these found wins.
_WORST_FIRST = ("pending", "failed", "rejected", "invalid", "not_found", "ambiguous",
                "drifted", "planned", "accepted", "duplicate")
#: Delivery states a run (re)sends.
RESEND = ("pending", "failed")
#: Delivery states that count as done for the exit code.
DONE = frozenset({"accepted", "duplicate"})


@dataclass(frozen=True)
class Pending:
    """A committed batch still to send, without its body."""

    batch_id: str
    endpoint: str
    user_key: str
    size: int
    newest: str | None = None  # the latest event time it carries (API form), if any


@dataclass(frozen=True)
class Placeholder:
    """A row that gets no batch this run, and why."""

    row_key: str
    status: str
    error: str | None


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False,
                                                 separators=(",", ":"), default=str)


def has_ledger(cp: Checkpoint) -> bool:
    """False only for a checkpoint of an earlier release read as it is (never upgraded) that
    never delivered to such a target."""
    return cp.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'deliveries'").fetchone() \
        is not None


class Ledger:
    """mParticle deliveries in a checkpoint (the `target` column says whose they are)."""

    def __init__(self, cp: Checkpoint, target: str = MPARTICLE) -> None:
        self.cp = cp
        self.db = cp.db
        self.target = target

    # -- identity ---------------------------------------------------------------------

    def bind(self, url: str, workspace: str) -> None:
        """Tie the checkpoint to one mParticle endpoint and key; refuse to resume elsewhere."""
        known_url = self.cp.meta(f"{self.target}_url")
        known_ws = self.cp.meta(f"{self.target}_workspace")
        if known_url is None:
            with self.cp.transaction():
                self.db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                    [(f"{self.target}_url", url),
                                     (f"{self.target}_workspace", workspace)])
            return
        if known_url != url:
            raise CheckpointError(
                f"{self.cp.path} delivered to mParticle at {known_url}, not {url}. Resuming "
                "against another pod would resend everything; use another --checkpoint.")
        if known_ws and workspace and known_ws != workspace:
            raise CheckpointError(
                f"{self.cp.path} belongs to another mParticle input (another "
                "MPARTICLE_API_KEY). Use that key, or another --checkpoint.")

    # -- planning ---------------------------------------------------------------------

    def delivered_rows(self, row_keys: Sequence[str]) -> set[str]:
        """Rows that already have batch-backed deliveries (those are never replanned)."""
        out: set[str] = set()
        for chunk in _chunks(row_keys):
            marks = ",".join("?" * len(chunk))
            out.update(r[0] for r in self.db.execute(
                f"SELECT DISTINCT row_key FROM deliveries WHERE target = ? AND batch_id IS NOT "
                f"NULL AND row_key IN ({marks})", (self.target, *chunk)))
        return out

    def message_owners(self, message_ids: Sequence[str]) -> dict[str, str]:
        """source_message_id → the row already carrying it."""
        out: dict[str, str] = {}
        for chunk in _chunks(message_ids):
            marks = ",".join("?" * len(chunk))
            for smid, row_key in self.db.execute(
                    f"SELECT source_message_id, row_key FROM deliveries WHERE target = ? AND "
                    f"batch_id IS NOT NULL AND source_message_id IN ({marks})",
                    (self.target, *chunk)):
                out.setdefault(smid, row_key)
        return out

    def commit_plan(self, replanned: Iterable[str], batches: Sequence[PlannedBatch],
                    placeholders: Sequence[Placeholder], *, status: str, run_id: str) -> None:
        """Commit intents (batches and their deliveries) before anything is sent."""
        now = utcnow().isoformat()
        with self.cp.transaction():
            self.db.executemany(
                "DELETE FROM deliveries WHERE target = ? AND row_key = ? AND batch_id IS NULL",
                [(self.target, k) for k in replanned])
            ord_ = self.db.execute("SELECT COALESCE(MAX(ord), 0) FROM delivery_batches "
                                   "WHERE target = ?", (self.target,)).fetchone()[0]
            for b in batches:
                ord_ += 1
                self.db.execute(
                    "INSERT OR IGNORE INTO delivery_batches (target, batch_id, endpoint, "
                    "user_key, body, ord, status, created_at, run_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (self.target, b.batch_id, b.endpoint, b.user_key, b.body, ord_, status, now,
                     run_id))
                self.db.executemany(
                    "INSERT OR REPLACE INTO deliveries (target, row_key, event_key, seq, "
                    "event_id, event_time, source_message_id, batch_id, endpoint, status, "
                    "payload, intent_at, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(self.target, d.row_key, d.event_key, d.seq, d.event_id,
                      format_api(d.event_time) if d.event_time else None, d.source_message_id,
                      b.batch_id, b.endpoint, status, _dumps(d.payload), now, run_id)
                     for d in b.deliveries])
            self.db.executemany(
                "INSERT OR REPLACE INTO deliveries (target, row_key, event_key, status, error, "
                "intent_at, run_id) VALUES (?, ?, '', ?, ?, ?, ?)",
                [(self.target, p.row_key, p.status, p.error, now, run_id) for p in placeholders])

    # -- sending ----------------------------------------------------------------------

    def resendable(self, generation: int) -> list[Pending]:
        """Batches to (re)send for the current sheet, in the order they were planned.

        Bodies are fetched per request (`bodies`), so a long backlog does not sit in memory.
        """
        return [Pending(*r) for r in self.db.execute(
            "SELECT b.batch_id, b.endpoint, b.user_key, LENGTH(CAST(b.body AS BLOB)), "
            "  (SELECT MAX(d.event_time) FROM deliveries d "
            "   WHERE d.target = b.target AND d.batch_id = b.batch_id) "
            "FROM delivery_batches b "
            "WHERE b.target = ? AND b.status IN ('pending', 'failed') AND EXISTS ("
            "  SELECT 1 FROM deliveries d JOIN rows r ON r.row_key = d.row_key "
            "  WHERE d.target = b.target AND d.batch_id = b.batch_id AND r.generation = ?) "
            "ORDER BY b.ord", (self.target, generation))]

    def reroute(self, batch_id: str, endpoint: str) -> None:
        """A batch (and its deliveries) now bound for another endpoint (same bytes)."""
        with self.cp.transaction():
            self.db.execute("UPDATE delivery_batches SET endpoint = ? WHERE target = ? AND "
                            "batch_id = ?", (endpoint, self.target, batch_id))
            self.db.execute("UPDATE deliveries SET endpoint = ? WHERE target = ? AND "
                            "batch_id = ?", (endpoint, self.target, batch_id))

    def oldest_unanswered(self) -> str | None:
        """When the oldest batch still pending or failed was committed (ISO time), if any."""
        row = self.db.execute(
            "SELECT MIN(created_at) FROM delivery_batches WHERE target = ? AND status IN "
            "('pending', 'failed')", (self.target,)).fetchone()
        return row[0] if row else None

    def bodies(self, batches: Sequence[Pending]) -> list[Outgoing]:
        out: dict[str, bytes] = {}
        for chunk in _chunks([b.batch_id for b in batches]):
            marks = ",".join("?" * len(chunk))
            for batch_id, body in self.db.execute(
                    f"SELECT batch_id, body FROM delivery_batches WHERE target = ? AND "
                    f"batch_id IN ({marks})", (self.target, *chunk)):
                out[batch_id] = body.encode("utf-8")
        return [Outgoing(b.batch_id, b.endpoint, b.user_key, out[b.batch_id]) for b in batches]

    def record(self, batch_ids: Sequence[str], status: str, *, run_id: str, attempts: int,
               http_status: int | None = None, error: str | None = None) -> None:
        """One request's answer for its batches and their deliveries, in one transaction."""
        now = utcnow().isoformat()
        accepted_at = now if status == "accepted" else None
        with self.cp.transaction():
            for batch_id in batch_ids:
                self.db.execute(
                    "UPDATE delivery_batches SET status = ?, http_status = ?, "
                    "attempts = attempts + ?, error = ?, done_at = ?, run_id = ? "
                    "WHERE target = ? AND batch_id = ?",
                    (status, http_status, attempts, error, now, run_id, self.target, batch_id))
                self.db.execute(
                    "UPDATE deliveries SET status = ?, http_status = ?, attempts = attempts + ?, "
                    "error = ?, accepted_at = COALESCE(?, accepted_at), run_id = ? "
                    "WHERE target = ? AND batch_id = ?",
                    (status, http_status, attempts, error, accepted_at, run_id, self.target,
                     batch_id))

    # -- reading back -----------------------------------------------------------------

    def report_lines(self, generation: int) -> Iterator[dict[str, Any]]:
        """Every sheet row's mParticle line(s), in sheet order."""
        cur = self.db.execute(
            """
            SELECT r.row_number, r.row_key, r.event_type, r.lookup_key, r.lookup_value,
                   d.event_id, d.event_time, NULLIF(d.event_key, ''), r.merge_mode,
                   COALESCE(d.status, CASE WHEN r.status = 'invalid' THEN 'invalid'
                                           ELSE 'pending' END),
                   d.http_status, COALESCE(d.attempts, 0),
                   COALESCE(d.error, CASE WHEN r.status = 'invalid' THEN r.error END),
                   d.payload, d.accepted_at, COALESCE(d.run_id, r.run_id),
                   d.source_message_id, d.batch_id, d.endpoint, 0, COALESCE(d.seq, 0)
            FROM rows r LEFT JOIN deliveries d ON d.row_key = r.row_key AND d.target = ?
            WHERE r.generation = ?
            UNION ALL
            SELECT dr.row_number, dr.row_key, r.event_type, r.lookup_key, r.lookup_value,
                   NULL, NULL, NULL, r.merge_mode, 'duplicate', NULL, 0,
                   'same content as row ' || dr.first_row_number, NULL, NULL, r.run_id,
                   NULL, NULL, NULL, 1, 0
            FROM duplicate_rows dr JOIN rows r ON r.row_key = dr.row_key
            WHERE dr.generation = ?
            ORDER BY 1, 20, 21
            """, (self.target, generation, generation))
        for r in cur:
            yield {
                "row_number": r[0], "row_key": r[1], "target": self.target, "event_type": r[2],
                "lookup_key": r[3], "lookup_value": r[4], "event_id": r[5], "timestamp": r[6],
                "idempotency_key": r[7], "merge_mode": r[8], "status": r[9],
                "mutation_id": None, "http_status": r[10], "attempts": r[11], "error": r[12],
                "attributes_before": None, "attributes_after": r[13], "applied_at": r[14],
                "run_id": r[15], "source_message_id": r[16], "source_request_id": r[17],
                "endpoint": r[18],
            }

    def row_counts(self, generation: int) -> dict[str, int]:
        """Rows by (worst) mParticle status, like `Checkpoint.status_counts` for Usermaven."""
        counts: dict[str, int] = {}
        row: int | None = None
        seen: set[str] = set()

        def flush() -> None:
            if row is not None:
                worst = next((s for s in _WORST_FIRST if s in seen), next(iter(seen)))
                counts[worst] = counts.get(worst, 0) + 1

        for line in self.report_lines(generation):
            if line["row_number"] != row:
                flush()
                row, seen = line["row_number"], set()
            seen.add(line["status"])
        flush()
        return counts

    def batch_counts(self) -> dict[str, int]:
        return dict(self.db.execute(
            "SELECT status, COUNT(*) FROM delivery_batches WHERE target = ? GROUP BY status",
            (self.target,)).fetchall())


def _chunks(items: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
