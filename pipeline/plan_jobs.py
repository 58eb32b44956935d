"""The jobs behind reviewed plans: save a plan, carry one out exactly, plan the undo of runs.

They sit on the same pieces as every run (checkpoint, lock, the one engine, the report):
a plan file is only another source of corrections, one whose keys and guards were decided
and approved beforehand.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.checkpoint import Checkpoint, workspace_id
from pipeline.checkpoint_jobs import open_existing
from pipeline.errors import SheetError
from pipeline.jobs import ApplyOutcome, SheetJob, Target
from pipeline.model import Correction, RowProblem
from pipeline.planfile import Plan, PlanError, read_plan, write_plan
from pipeline.planning import plan_corrections, plan_from_checkpoint, sheet_users
from pipeline.revert import revert_plan
from pipeline.runner import RunOptions
from pipeline.sheet import fingerprint
from pipeline.targets.mparticle.deliver import MParticleSetup
from pipeline.targets.mparticle.mapping import MParticleOptions
from pipeline.timeutil import utcnow


@dataclass(frozen=True)
class PlanJob(SheetJob):
    """A saved plan as the source of a run: its items, in order, as corrections."""

    plan: Plan | None = None
    refresh: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def batches(self) -> Iterator[list[Correction | RowProblem]]:
        assert self.plan is not None
        yield from plan_corrections(self.plan, refresh=self.refresh,
                                    batch_size=self.batch_size)

    def names_explicit_keys(self) -> bool:
        """A plan has no sheet header; its keys are final (sent exactly as reviewed)."""
        return False


def api_identity(target: Target) -> dict[str, Any]:
    """Which API and workspace a plan was looked up against: never the token itself."""
    return {"usermaven": {"url": target.identity or target.api_url,
                          "workspace": workspace_id(target.token)}}


def plan_saver(out: Path, job: SheetJob, target: Target, options: RunOptions,
               saved: dict[str, Any], mparticle: MParticleSetup | None = None) -> Any:
    """A hook for `plan_sheet`: turn the plan run's checkpoint into the plan file `out`.

    With mParticle among the targets, each item also carries its row's user and the plan
    the mParticle options, so `apply --plan` delivers there exactly as reviewed. The digest
    and item counts land in `saved`, for the caller to print.
    """
    def save(cp: Checkpoint, outcome: ApplyOutcome) -> None:
        api = api_identity(target)
        opts: dict[str, Any] = {"on_multiple": options.on_multiple,
                                "key_namespace": options.key_namespace}
        users = None
        if mparticle is not None:
            api["mparticle"] = {"url": mparticle.target.name,
                                "workspace": mparticle.target.workspace}
            opts["mparticle"] = dict(mparticle.options.__dict__)
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


def mparticle_setup_for(plan: Plan, setup: MParticleSetup) -> MParticleSetup:
    """mParticle as the plan reviewed it: its options, and only the input it was made for."""
    made_for = plan.api.get("mparticle") or {}
    if made_for.get("url") != setup.target.name:
        raise PlanError(f"the plan delivers to mParticle at {made_for.get('url')}, not "
                        f"{setup.target.name}; apply it to the input it was reviewed for")
    if made_for.get("workspace") and made_for["workspace"] != setup.target.workspace:
        raise PlanError("the plan was made for another mParticle input (another "
                        "MPARTICLE_API_KEY); use that key, or make a new plan")
    return replace(setup, options=MParticleOptions(**plan.options.get("mparticle", {})))


def load_plan(path: Path, target: Target, *, expect_digest: str | None = None,
              refresh: bool = True, plan: Plan | None = None) -> PlanJob:
    """A checked plan, ready to run against `target`; refuses another API or workspace."""
    plan = plan or read_plan(path, expect_digest)
    made_for = plan.api.get("usermaven") or {}
    mine = api_identity(target)["usermaven"]
    if made_for.get("url") != mine["url"]:
        raise PlanError(f"{path} was made against {made_for.get('url')}, not {mine['url']}; "
                        "apply it to the API it was reviewed for, or make a new plan")
    if made_for.get("workspace") and made_for["workspace"] != mine["workspace"]:
        raise PlanError(f"{path} was made for another workspace (another API key); use the "
                        "token of the workspace it was reviewed for, or make a new plan")
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
