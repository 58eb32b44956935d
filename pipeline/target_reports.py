"""What a checkpoint says per target: which targets the last run delivered to, their rows by
status, and the audit report's lines of all of them merged in sheet order."""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.targets import PRIMARY, TARGETS, get, in_order, primary_only

if TYPE_CHECKING:
    from pipeline.checkpoint import Checkpoint


def remember_targets(cp: Checkpoint, targets: Sequence[str]) -> None:
    """The last run's targets: what `corrections report` and `status` show."""
    cp.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('targets', ?)",
                  (",".join(targets),))


def known_targets(cp: Checkpoint) -> tuple[str, ...]:
    value = cp.meta("targets")
    return in_order(value.split(",")) if value else (PRIMARY,)


def target_counts(cp: Checkpoint, generation: int | None = None) -> dict[str, dict[str, int]]:
    """Rows by status, per target the last run delivered to."""
    gen = cp.current_generation() if generation is None else generation
    return {name: get(name).row_counts(cp, gen) for name in known_targets(cp)
            if get(name).present(cp)}


def report_lines(cp: Checkpoint, generation: int | None,
                 targets: Sequence[str]) -> Iterator[dict[str, Any] | tuple[Any, ...]]:
    """The audit report's lines for the given targets, merged in sheet order.

    With the primary target alone these are exactly `Checkpoint.report_tuples` (the classic
    layout); otherwise each line also says its target (and that target's own ids).
    """
    gen = cp.current_generation() if generation is None else generation
    if primary_only(targets):
        yield from cp.report_tuples(gen)
        return
    chosen = [get(name) for name in in_order(targets) if get(name).present(cp)]
    order = {name: i for i, name in enumerate(TARGETS)}
    yield from heapq.merge(*(t.report_lines(cp, gen) for t in chosen),
                           key=lambda line: (line["row_number"], order[line["target"]]))
    for t in chosen:  # e.g. mutations of rows no longer in the sheet: never forgotten
        yield from t.trailing_lines(cp, gen)
