"""The `validate` job, and the offline checks every run makes before it sends anything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pipeline.errors import SheetError
from pipeline.model import Correction, RowProblem
from pipeline.targets import MPARTICLE, offline_problem

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
                   mparticle: Any = None, usermaven: bool = True,
                   extra: dict[str, Any] | None = None) -> ValidationOutcome:
    """Read and check every row offline; problems go to `on_problem` as they are found.

    `extra` names the other targets with their offline options (`mparticle=` is the same as
    `extra={"mparticle": options}`): rows are also checked against their documented limits.
    """
    extra = _extra(extra, mparticle)
    out = ValidationOutcome()
    job = replace(job, usermaven=usermaven)
    for batch in job.batches():
        for item in batch:
            out.rows += 1
            item = target_problem(item, extra, usermaven)
            if isinstance(item, RowProblem):
                out.problems += 1
                if on_problem is not None:
                    on_problem(item)
            else:
                out.valid += 1
    return out


def _extra(extra: dict[str, Any] | None, mparticle: Any) -> dict[str, Any]:
    out = dict(extra or {})
    if mparticle is not None:
        out[MPARTICLE] = mparticle
    return out


def target_problem(item: Correction | RowProblem, extra: dict[str, Any],
                   usermaven: bool) -> Correction | RowProblem:
    """A valid row that another target could not take, as a problem (its name first)."""
    if isinstance(item, RowProblem):
        return item
    for name, options in extra.items():
        problem = offline_problem(name, item, options, primary=usermaven)
        if problem is not None:
            return RowProblem(item.row_number, item.row_key, problem.column,
                              f"{name}: {problem.message}")
    return item


def refuse_invalid(job: SheetJob, extra: dict[str, Any] | None = None,
                   usermaven: bool = True) -> None:
    """--strict: any invalid row (for any target) refuses the whole sheet before sending."""
    extra = extra or {}
    problems: list[str] = []
    n = 0
    for batch in job.batches():
        for item in batch:
            item = target_problem(item, extra, usermaven)
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
