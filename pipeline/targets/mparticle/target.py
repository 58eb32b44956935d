"""mParticle's Events API behind the `Target` protocol: corrections as data for the user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipeline.checkpoint import Checkpoint
from pipeline.run_types import Delivered
from pipeline.target import RunContext
from pipeline.targets import PRIMARY
from pipeline.targets.mparticle.deliver import (
    MParticleResult,
    MParticleSetup,
    deliver,
    rows_left,
)
from pipeline.targets.mparticle.ledger import Ledger, has_ledger


class MParticle:
    name = "mparticle"

    def bind(self, cp: Checkpoint, setup: MParticleSetup) -> None:
        Ledger(cp).bind(setup.target.name, setup.target.workspace)

    def describe(self, setup: MParticleSetup) -> dict[str, Any] | None:
        return {**setup.options.__dict__, "url": setup.target.name}

    def deliver(self, run: RunContext, setup: MParticleSetup) -> Delivered:
        return deliver(run.cp, setup, run.options, run.batches, run_id=run.run_id,
                       generation=run.generation, usermaven=PRIMARY in run.targets,
                       install_signals=run.install_signals, early=run.early)

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
