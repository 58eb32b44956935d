"""The one protocol every delivery target implements, and what a run hands it.

The core (jobs, reports, status, the library API) loops over the targets of a run and asks
each the same questions: bind yourself to this checkpoint, deliver these rows, how many rows
are where, which report lines are yours. It never names a target; `pipeline.targets` is the
registry of those this release ships.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.model import Correction, RowProblem, Status
from pipeline.run_types import Delivered, RunOptions

if TYPE_CHECKING:
    from pipeline.checkpoint import Checkpoint
    from pipeline.progress import RunProgress

Batches = Iterable[list[Correction | RowProblem]]


@dataclass
class RunContext:
    """One run as every target sees it: the checkpoint, the rows, the options, the stop."""

    cp: Checkpoint
    batches: Callable[[], Batches]  # the sheet's rows, read and checked once per call
    options: RunOptions
    run_id: str
    generation: int
    targets: tuple[str, ...]  # every target of this run, in delivery order
    install_signals: bool = True
    early: list[int] | None = None  # stop signals noted before the event loop ran
    on_row: Callable[[int, Status, str | None], None] | None = None
    progress: RunProgress | None = None
    names_explicit_keys: bool = False


class Target(Protocol):
    """A place corrections are delivered to."""

    #: the name on the command line (`--target`), in the report's `target` column and in
    #: the checkpoint
    name: str

    def bind(self, cp: Checkpoint, setup: Any) -> None:
        """Record where this checkpoint delivers (URL, workspace; never a secret); refuse a
        checkpoint bound elsewhere."""

    def describe(self, setup: Any) -> dict[str, Any] | None:
        """The setup as the run's recorded options show it (never a secret)."""

    def deliver(self, run: RunContext, setup: Any) -> Delivered:
        """Plan, commit, send and record this run's deliveries; stop when asked."""

    #: whether a saved plan's items carry each row's user (for this target's deliveries)
    needs_users: bool

    def identity(self, setup: Any) -> dict[str, Any]:
        """Where the setup delivers, as a plan records it: URL and a workspace hash."""

    def plan_options(self, setup: Any) -> dict[str, Any] | None:
        """The setup's own options a plan keeps, so it is applied exactly as reviewed."""

    def for_plan(self, identity: dict[str, Any], options: dict[str, Any] | None,
                 setup: Any) -> Any:
        """The setup to apply a plan made with `identity` and `options`; refuses another
        destination (`PlanError`)."""

    def checkpoint_identity(self, cp: Checkpoint) -> dict[str, Any] | None:
        """Where this checkpoint delivered to this target (None: never)."""

    def undo_recipients(self, cp: Checkpoint, runs: Sequence[str]) -> list[Any]:
        """For a revert: each accepted delivery of `runs` (its `event_id`, `row_key` and
        `user`), where the target keeps what it got and the earlier values must follow."""

    def summary(self, result: Any) -> dict[str, Any]:
        """This target's part of the run, for the JSON summary."""

    def summary_lines(self, result: Any, run_stop: str | None) -> list[str]:
        """This target's part of the run, for the printed summary."""

    def read_back(self, checkpoint: Path, setup: Any, *, wait: float, concurrency: int,
                  timeout: float, transport: Any = None) -> Any:
        """`verify`: read what was delivered back and record verified or mismatch (a target
        without a read API refuses, saying so)."""

    def not_sent(self, why: str) -> Delivered:
        """The result of a part of the run that sent nothing (an earlier target stopped)."""

    def offline_options(self, setup: Any) -> Any:
        """What the offline row check needs of the setup (None: no check of its own)."""

    def present(self, cp: Checkpoint) -> bool:
        """Whether the checkpoint holds anything of this target."""

    def row_counts(self, cp: Checkpoint, generation: int) -> dict[str, int]:
        """Rows of the sheet by this target's status."""

    def rows_left(self, counts: dict[str, int]) -> int:
        """How many of those rows a later run still has to deliver (or explain)."""

    def report_lines(self, cp: Checkpoint, generation: int) -> Iterator[dict[str, Any]]:
        """This target's report lines for the sheet, in sheet order."""

    def trailing_lines(self, cp: Checkpoint, generation: int) -> Iterator[dict[str, Any]]:
        """Lines after the sheet's (an audit trail of rows no longer in it)."""
