"""The `validate` job, and the offline checks every run makes before it sends anything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pipeline.errors import SheetError
from pipeline.model import Correction, RowProblem
from pipeline.targets.mparticle.mapping import MParticleOptions, offline_problem

if TYPE_CHECKING:
    from pipeline.jobs import SheetJob

EXIT_OK, EXIT_USAGE = 0, SheetError.exit_code

@dataclass
class ValidationOutcome:
    rows: int = 0
    valid: int = 0
    problems: int = 0

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.problems == 0 else EXIT_USAGE


def validate_sheet(job: SheetJob,
                   on_problem: Callable[[RowProblem], None] | None = None, *,
                   mparticle: MParticleOptions | None = None,
                   usermaven: bool = True) -> ValidationOutcome:
    """Read and check every row offline; problems go to `on_problem` as they are found.

    With `mparticle`, rows are also checked against mParticle's documented limits.
    """
    out = ValidationOutcome()
    job = replace(job, usermaven=usermaven)
    for batch in job.batches():
        for item in batch:
            out.rows += 1
            item = target_problem(item, mparticle, usermaven)
            if isinstance(item, RowProblem):
                out.problems += 1
                if on_problem is not None:
                    on_problem(item)
            else:
                out.valid += 1
    return out


def target_problem(item: Correction | RowProblem, options: MParticleOptions | None,
                       usermaven: bool) -> Correction | RowProblem:
    """A valid row that mParticle could not take, as a problem (when mParticle is a target)."""
    if options is None or isinstance(item, RowProblem):
        return item
    problem = offline_problem(item, options, usermaven=usermaven)
    if problem is None:
        return item
    return RowProblem(item.row_number, item.row_key, problem.column,
                      f"mparticle: {problem.message}")


def refuse_invalid(job: SheetJob, mparticle: MParticleOptions | None = None,
                    usermaven: bool = True) -> None:
    problems: list[str] = []
    n = 0
    for batch in job.batches():
        for item in batch:
            item = target_problem(item, mparticle, usermaven)
            if isinstance(item, RowProblem):
                n += 1
                if len(problems) < 20:
                    problems.append(str(item))
    if n:
        more = f"\n  … and {n - len(problems)} more" if n > len(problems) else ""
        raise SheetError(
            f"--strict: {n} invalid row(s), nothing was sent:\n  " + "\n  ".join(problems)
            + more
        )
