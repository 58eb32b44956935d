"""The jobs behind reviewed plans: save a plan, carry one out exactly, plan the undo of runs.

They sit on the same pieces as every run (checkpoint, lock, the one engine, the report):
a plan file is only another source of corrections, one whose keys and guards were decided
and approved beforehand.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.checkpoint import Checkpoint
from pipeline.checkpoint_jobs import open_existing
from pipeline.errors import SheetError
from pipeline.jobs import ApplyOutcome, SheetJob, Target
from pipeline.model import Correction, RowProblem
from pipeline.planfile import Plan, PlanError, read_plan, write_plan
from pipeline.planning import plan_corrections, plan_from_checkpoint, sheet_users
from pipeline.revert import revert_plan
from pipeline.run_types import RunOptions
from pipeline.sheet import fingerprint
from pipeline.targets import PRIMARY, get, in_order
from pipeline.timeutil import utcnow


@dataclass(frozen=True)
class PlanJob(SheetJob):
    """A saved plan as the source of a run: its items, in order, as corrections."""

    plan: Plan | None = None
    refresh: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def read(self) -> Iterator[list[Correction | RowProblem]]:
        assert self.plan is not None
        yield from plan_corrections(self.plan, refresh=self.refresh,
                                    batch_size=self.batch_size)

    def names_explicit_keys(self) -> bool:
        """A plan has no sheet header; its keys are final (sent exactly as reviewed)."""
        return False


def api_identity(target: Target) -> dict[str, Any]:
    """Which API and workspace a plan was looked up against: never the token itself."""
    return {PRIMARY: get(PRIMARY).identity(target)}


def plan_saver(out: Path, job: SheetJob, target: Target, options: RunOptions,
               saved: dict[str, Any], extra: dict[str, Any] | None = None) -> Any:
    """A hook for `plan_sheet`: turn the plan run's checkpoint into the plan file `out`.

    With other targets (`extra`, setups by name), the plan records each one's destination
    and options, and items carry their row's user where a target needs it, so `apply --plan`
    delivers there exactly as reviewed. The digest and item counts land in `saved`, for the
    caller to print.
    """
    def save(cp: Checkpoint, outcome: ApplyOutcome) -> None:
        api = api_identity(target)
        opts: dict[str, Any] = {"on_multiple": options.on_multiple,
                                "key_namespace": options.key_namespace}
        users = None
        for name, setup in (extra or {}).items():
            t = get(name)
            api[name] = t.identity(setup)
            if (own := t.plan_options(setup)) is not None:
                opts[name] = own
            if t.needs_users and users is None:
                users = sheet_users(job.batches())
        plan = plan_from_checkpoint(
            cp, cp.current_generation(), api=api, users=users,
            source={"sheet": job.name, "sheet_fingerprint": fingerprint(job.sheet),
                    "sheet_name": job.sheet_name,
                    "defaults": {k: None if v is None else str(v)
                                 for k, v in job.defaults.__dict__.items()}},
            options=opts, created_at=utcnow().isoformat())
        saved["digest"] = write_plan(plan, out)
        saved["items"] = len(plan.items)
        saved["skipped"] = len(plan.skipped)
        saved["unchecked"] = sum(1 for i in plan.items if i.guard is None)
    return save


def setups_for_plan(plan: Plan, extra: dict[str, Any]) -> dict[str, Any]:
    """Every other target as the plan reviewed it: its options, and only the destination
    it was made for."""
    return {name: get(name).for_plan(plan.api.get(name) or {}, plan.options.get(name), setup)
            for name, setup in extra.items()}


def plan_targets(plan: Plan) -> tuple[str, ...]:
    """The targets a plan was reviewed for, in delivery order."""
    return in_order(list(plan.api))


def load_plan(path: Path, target: Target, *, expect_digest: str | None = None,
              refresh: bool = True, plan: Plan | None = None) -> PlanJob:
    """A checked plan, ready to run against `target`; refuses another API or workspace."""
    plan = plan or read_plan(path, expect_digest)
    try:
        get(PRIMARY).for_plan(plan.api.get(PRIMARY) or {}, None, target)
    except PlanError as exc:
        raise PlanError(f"{path}: {exc}") from None
    return PlanJob(sheet=path, plan=plan, refresh=refresh)


def default_plan_checkpoint(plan: Path) -> Path:
    return plan.with_name(f"{_stem(plan)}.checkpoint.sqlite")


def default_plan_report(plan: Path) -> Path:
    return plan.with_name(f"{_stem(plan)}.audit.csv")


def _stem(plan: Path) -> str:
    name = plan.name
    for suffix in (".plan.json", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return plan.stem


@dataclass(frozen=True)
class RevertOutcome:
    plan: Plan
    digest: str
    out: Path


def write_revert(checkpoint: Path, runs: Sequence[str] | None, *, out: Path | None,
                 force: bool = False) -> RevertOutcome:
    """Write the plan undoing `runs` of `checkpoint` (None: all of them). Offline."""
    cp = open_existing(checkpoint)
    try:
        plan = revert_plan(cp, runs, force=force)
    finally:
        cp.close()
    if out is None:
        label = "all" if runs is None else "-".join(runs)[:80]
        out = checkpoint.with_name(f"{checkpoint.name.split('.')[0]}.revert-{label}.plan.json")
    if out.suffix != ".json":
        raise SheetError(f"--out {out}: a plan file is JSON; name it <something>.plan.json")
    return RevertOutcome(plan, write_plan(plan, out), out)
