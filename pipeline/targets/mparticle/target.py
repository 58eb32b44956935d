"""mParticle's Events API behind the `Target` protocol: corrections as data for the user."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.checkpoint import Checkpoint
from pipeline.run_types import Delivered
from pipeline.target import RunContext
from pipeline.targets import PRIMARY
from pipeline.targets.mparticle import undo
from pipeline.targets.mparticle.deliver import (
    MParticleResult,
    MParticleSetup,
    deliver,
    rows_left,
)
from pipeline.targets.mparticle.ledger import Ledger, has_ledger
from pipeline.targets.mparticle.mapping import MParticleOptions


class MParticle:
    name = "mparticle"
    needs_users = True

    def identity(self, setup: MParticleSetup) -> dict[str, Any]:
        return {"url": setup.target.name, "workspace": setup.target.workspace}

    def plan_options(self, setup: MParticleSetup) -> dict[str, Any] | None:
        return dict(setup.options.__dict__)

    def for_plan(self, identity: dict[str, Any], options: dict[str, Any] | None,
                 setup: MParticleSetup) -> MParticleSetup:
        """mParticle as the plan reviewed it: its options, and only the input it was made
        for."""
        from pipeline.planfile import PlanError  # plans only: not loaded by every run

        if identity.get("url") != setup.target.name:
            raise PlanError(f"the plan delivers to mParticle at {identity.get('url')}, not "
                            f"{setup.target.name}; apply it to the input it was reviewed for")
        if identity.get("workspace") and identity["workspace"] != setup.target.workspace:
            raise PlanError("the plan was made for another mParticle input (another "
                            "MPARTICLE_API_KEY); use that key, or make a new plan")
        return replace(setup, options=MParticleOptions(**(options or {})))

    def bind(self, cp: Checkpoint, setup: MParticleSetup) -> None:
        Ledger(cp).bind(setup.target.name, setup.target.workspace)

    def describe(self, setup: MParticleSetup) -> dict[str, Any] | None:
        return {**setup.options.__dict__, "url": setup.target.name}

    def deliver(self, run: RunContext, setup: MParticleSetup) -> Delivered:
        return deliver(run.cp, setup, run.options, run.batches, run_id=run.run_id,
                       generation=run.generation, usermaven=PRIMARY in run.targets,
                       install_signals=run.install_signals, early=run.early)

    def checkpoint_identity(self, cp: Checkpoint) -> dict[str, Any] | None:
        return undo.identity(cp)

    def undo_recipients(self, cp: Checkpoint, runs: Sequence[str]) -> list[Any]:
        return list(undo.delivered(cp, runs))

    def summary(self, result: MParticleResult) -> dict[str, Any]:
        mp = result
        return {"requests": mp.requests, "batches_planned": mp.batches_planned,
                "batches_sent": mp.batches_sent, "by_endpoint": mp.by_endpoint,
                "retries": mp.retries, "throttled": mp.throttled,
                "seconds": round(mp.elapsed, 3), "stopped": mp.stop_reason or mp.skipped,
                "fatal": mp.fatal}

    def summary_lines(self, result: MParticleResult, run_stop: str | None) -> list[str]:
        mp = result
        if mp.skipped:
            return [f"mparticle: nothing sent ({mp.skipped}); rerun to deliver"]
        where = ", ".join(f"{n} to {path}" for path, n in sorted(mp.by_endpoint.items()))
        lines = [f"mparticle: {mp.requests} requests · {mp.batches_sent} batches accepted"
                 + (f" ({where})" if where else "") + f" · retries {mp.retries} · "
                 f"throttled {mp.throttled} · {mp.elapsed:.1f} s"]
        if mp.stop_reason and mp.stop_reason != run_stop:
            lines.append(f"mparticle stopped: {mp.stop_reason}")
        return lines

    def read_back(self, checkpoint: Path, setup: Any, *, wait: float, concurrency: int,
                  timeout: float, transport: Any = None) -> Any:
        from pipeline.errors import UsageError

        raise UsageError("mParticle has no API to read events back; its 202 answers, kept in "
                         "the report, are the proof of delivery")

    def not_sent(self, why: str) -> Delivered:
        return MParticleResult(skipped=why)

    def offline_options(self, setup: MParticleSetup) -> Any:
        return setup.options

    def present(self, cp: Checkpoint) -> bool:
        return has_ledger(cp)

    def row_counts(self, cp: Checkpoint, generation: int) -> dict[str, int]:
        return Ledger(cp).row_counts(generation)

    def rows_left(self, counts: dict[str, int]) -> int:
        return rows_left(counts)

    def report_lines(self, cp: Checkpoint, generation: int) -> Iterator[dict[str, Any]]:
        return Ledger(cp).report_lines(generation)

    def trailing_lines(self, cp: Checkpoint, generation: int) -> Iterator[dict[str, Any]]:
        return iter(())


TARGET = MParticle()
