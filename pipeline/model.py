"""The small, frozen records that flow between the pieces: corrections, problems, statuses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.guards import Guard


class Status(StrEnum):
    """Outcome of a (row, event) pair. The report and the checkpoint speak these words."""

    PENDING = "pending"
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    DUPLICATE = "duplicate"
    INVALID = "invalid"
    NOT_FOUND = "not_found"
    AMBIGUOUS = "ambiguous"
    CONFLICT = "conflict"
    REJECTED = "rejected"
    FAILED = "failed"
    PLANNED = "planned"
    VERIFIED = "verified"
    MISMATCH = "mismatch"
    ACCEPTED = "accepted"  # mParticle answered 202 for the batch carrying the correction
    DRIFTED = "drifted"  # the event no longer holds what the guard expects: nothing sent


#: States that count as done: a rerun skips them and they give exit code 0.
SUCCESS = frozenset({Status.APPLIED, Status.UNCHANGED, Status.DUPLICATE, Status.VERIFIED})
#: Outcomes retried only with --retry-unresolved: the data may have changed since.
UNRESOLVED = frozenset({Status.NOT_FOUND, Status.AMBIGUOUS, Status.DRIFTED})
#: Outcomes a rerun never retries: the API gave a final answer (or the row itself is wrong).
PERMANENT = frozenset({Status.CONFLICT, Status.REJECTED, Status.INVALID})

MERGE_MODES = ("merge", "replace")


@dataclass(frozen=True)
class Window:
    """A closed UTC time range for a lookup."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class Correction:
    """One valid sheet row, with the command-line defaults already applied."""

    row_number: int
    row_key: str
    attributes: Mapping[str, Any]
    merge_mode: str = "merge"
    event_type: str | None = None
    event_id: str | None = None
    timestamp: datetime | None = None
    lookup_key: str | None = None
    lookup_value: str | None = None
    window: Window | None = None
    idempotency_key: str | None = None
    #: mParticle user identities from `identity.<key>` cells (key → value), and the MPID cell.
    identities: Mapping[str, str] = field(default_factory=dict)
    mpid: str | None = None
    #: The sheet's own time of the event (`timestamp` with event_id, else `event_time`).
    event_time: datetime | None = None
    #: What the event must hold for the change to be sent (`expect.<attr>` cells, a plan).
    guard: Guard | None = None
    #: The idempotency key is a reviewed plan's: sent exactly as it is, never re-derived.
    exact_key: bool = False
    #: Read the event's current state before sending (a plan item addressed by event id).
    refresh: bool = False
    #: The state a plan saw before this change, recorded when the event is not read again.
    known_before: Mapping[str, Any] | None = None
    #: What mParticle receives when it differs from `attributes` (a revert restores only
    #: the attributes the run changed there, with their earlier values).
    mparticle_attributes: Mapping[str, Any] | None = None

    @property
    def needs_lookup(self) -> bool:
        return self.event_id is None


@dataclass(frozen=True)
class RowProblem:
    """One invalid sheet row: reported as `invalid`, never sent."""

    row_number: int
    row_key: str
    column: str | None
    message: str
    cells: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        where = f"row {self.row_number}"
        if self.column:
            where += f", column {self.column!r}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class SheetDefaults:
    """Values from the command line for rows that do not say."""

    event_type: str | None = None
    match: str | None = None
    from_: datetime | None = None
    to: datetime | None = None
    merge_mode: str = "merge"


@dataclass(frozen=True)
class FoundEvent:
    """One event as the lookup endpoint returned it."""

    event_id: str
    event_type: str
    attributes: Mapping[str, Any]
    timestamp: datetime
    is_deleted: bool = False
