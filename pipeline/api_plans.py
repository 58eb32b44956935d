"""The library side of reviewed plans: save a plan, apply one exactly, write the undo of runs.

Mixed into `pipeline.Corrections`, so a notebook or an orchestrator does what the command
line does:

    c = pipeline.Corrections(token=...)
    saved = c.save_plan("fixes.csv", "fixes.plan.json")   # saved.digest: what a reviewer signs
    result = c.apply_plan("fixes.plan.json", expect_digest=saved.digest)
    undo = c.revert("fixes.plan.checkpoint.sqlite", runs=[result.run_id])
    c.apply_plan(undo)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.api import RunSummary, Sheet
    from pipeline.jobs import Target
    from pipeline.run_types import RunOptions


@dataclass(frozen=True)
class SavedPlan:
    """A plan file written by `save_plan`: where, its digest, and what it holds."""

    path: Path
    digest: str
    items: int
    skipped: int
    unchecked: int


class PlanMethods:
    """`save_plan`, `apply_plan`, `revert` (and async twins) for `pipeline.Corrections`."""

    options: RunOptions
    transport: Any

    def _target(self) -> Target:  # provided by Corrections
        raise NotImplementedError

    def save_plan(self, sheet: str | Path | Sheet, out: str | Path) -> SavedPlan:
        """Look every row up and write the plan file `apply_plan` carries out; mutate nothing."""
        from pipeline.api import _call

        return _call(self._save_plan, sheet, Path(out))

    async def save_plan_async(self, sheet: str | Path | Sheet, out: str | Path) -> SavedPlan:
        return await asyncio.to_thread(self.save_plan, sheet, out)

    def apply_plan(self, plan: str | Path, *, expect_digest: str | None = None,
                   refresh: bool = True, checkpoint: str | Path | None = None,
                   report: str | Path | None = None) -> RunSummary:
        """Carry out a saved plan exactly (Usermaven); events changed since are `drifted`.

        Refuses (raising, exit code 2) a plan edited after it was written, or one whose digest
        is not `expect_digest`. Defaults: checkpoint and report beside the plan.
        """
        from pipeline.api import _call

        return _call(self._apply_plan, Path(plan), expect_digest, refresh, checkpoint, report)

    async def apply_plan_async(self, plan: str | Path, *, expect_digest: str | None = None,
                               refresh: bool = True, checkpoint: str | Path | None = None,
                               report: str | Path | None = None) -> RunSummary:
        return await asyncio.to_thread(
            lambda: self.apply_plan(plan, expect_digest=expect_digest, refresh=refresh,
                                    checkpoint=checkpoint, report=report))

    def revert(self, checkpoint: str | Path, *, runs: Sequence[str] | None = None,
               out: str | Path | None = None, force: bool = False) -> Path:
        """Write the plan that undoes `runs` (default: all) of a checkpoint; offline.

        Apply it with `apply_plan` (or `corrections apply --plan PATH`), like any plan.
        """
        from pipeline.plan_jobs import write_revert

        done = write_revert(Path(checkpoint), runs, out=Path(out) if out else None,
                            force=force)
        return done.out

    # -- the work -------------------------------------------------------------------------

    def _save_plan(self, sheet: str | Path | Sheet, out: Path) -> SavedPlan:
        import tempfile

        from pipeline.api import _sheet
        from pipeline.jobs import plan_sheet
        from pipeline.plan_jobs import plan_saver

        job, target = _sheet(sheet).job(), self._target()
        saved: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="corrections-plan-") as tmp:
            plan_sheet(job, target, self.options, report=Path(tmp) / "plan.csv",
                       transport=self.transport,
                       on_checkpoint=plan_saver(out, job, target, self.options, saved))
        return SavedPlan(out, saved["digest"], saved["items"], saved["skipped"],
                         saved["unchecked"])

    def _apply_plan(self, plan: Path, expect_digest: str | None, refresh: bool,
                    checkpoint: str | Path | None, report: str | Path | None) -> RunSummary:
        from pipeline.api import _summary
        from pipeline.errors import UsageError
        from pipeline.jobs import apply_sheet
        from pipeline.plan_jobs import default_plan_checkpoint, default_plan_report, load_plan
        from pipeline.planfile import read_plan
        from pipeline.targets import PRIMARY

        doc = read_plan(plan, expect_digest)
        if len(doc.api) > 1:
            raise UsageError(f"{plan} also covers {', '.join(sorted(set(doc.api) - {PRIMARY}))}"
                             "; apply it with `corrections apply --plan` (the library delivers "
                             "to Usermaven only)")
        job = load_plan(plan, self._target(), refresh=refresh, plan=doc)
        cp = Path(checkpoint) if checkpoint is not None else default_plan_checkpoint(plan)
        out = str(report) if report is not None else str(default_plan_report(plan))
        outcome = apply_sheet(job, self._target(), self.options, checkpoint=cp, report=out,
                              transport=self.transport, install_signals=False)
        return _summary("apply", outcome, cp, out, None)
