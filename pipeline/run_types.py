"""The run's plain data: its options, its totals and result, a row in work, and helpers
that read statuses; no I/O, so the runner and the jobs share them without cycles."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from pipeline.checkpoint import Intent
from pipeline.model import Status

K = TypeVar("K")
V = TypeVar("V")
MEMORY_ENTRIES = 50_000


@dataclass(frozen=True)
class RunOptions:
    concurrency: int = 8
    rate: float | None = None
    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_wait: float = 300.0
    on_multiple: str = "fail"
    key_namespace: str = ""
    retry_unresolved: bool = False
    key_ttl: float = 24 * 3600.0
    shutdown_grace: float = 10.0
    timeout: float = 30.0
    plan_only: bool = False


@dataclass
class RunTotals:
    rows_new: int = 0
    rows_done: int = 0
    rows_invalid: int = 0
    rows_duplicate: int = 0
    rows_worked: int = 0
    mutations_sent: int = 0
    reconciled: int = 0


@dataclass
class Delivered:
    """What one target's part of a run did, in the terms every target shares."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    elapsed: float = 0.0
    stop_reason: str | None = None
    fatal: str | None = None
    signal_number: int | None = None
    rows_new: int = 0  # rows this target met for the first time
    rows_done: int = 0  # rows it had finished in earlier runs
    skipped: str | None = None  # why nothing was sent (an earlier target stopped the run)

    @property
    def stopped(self) -> bool:
        return bool(self.fatal or self.stop_reason or self.signal_number is not None)


@dataclass
class RunResult(Delivered):
    """The Usermaven part: lookups and mutations, and the rows' totals."""

    run_id: str = ""
    exit_code: int = 0
    lookups: int = 0
    mutations: int = 0
    totals: RunTotals = field(default_factory=RunTotals)


@dataclass
class EventTarget:
    """One event a row will touch, with what we know of its attributes before."""

    event_id: str
    timestamp: datetime
    before: Mapping[str, Any] | None


class LRU(OrderedDict[K, V]):
    """A dict that forgets its least recently written entries beyond `size`."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


def after_state(before: Mapping[str, Any] | None, attrs: Mapping[str, Any],
                merge_mode: str) -> dict[str, Any] | None:
    if merge_mode == "replace":
        return dict(attrs)
    if before is None:
        return None
    return {**before, **attrs}


def row_status(outcomes: Iterable[Status]) -> Status:
    """A row's status from its events': the worst one wins."""
    found = set(outcomes)
    for s in (Status.PENDING, Status.FAILED, Status.CONFLICT, Status.REJECTED,
              Status.NOT_FOUND, Status.AMBIGUOUS, Status.DRIFTED):
        if s in found:
            return s
    if Status.APPLIED in found:
        return Status.APPLIED
    if Status.PLANNED in found:
        return Status.PLANNED
    if found and found <= {Status.UNCHANGED}:
        return Status.UNCHANGED
    if Status.DUPLICATE in found:
        return Status.DUPLICATE
    return Status.UNCHANGED if not found else next(iter(found))


def outcome_fields(intent: Intent, tries: int, exc: Any) -> dict[str, Any]:
    """What the checkpoint records of a mutation that ended in an API error."""
    return {"attempts": intent.attempts + tries, "http_status": exc.http_status,
            "error": str(exc)}
