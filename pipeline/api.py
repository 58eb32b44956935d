"""The library API: the whole job from a script, a notebook or an orchestrator task.

    import pipeline

    fixes = pipeline.Sheet("fixes.csv", event_type="order_completed", match="order_id",
                           start="2026-09", end="2026-09")
    corrections = pipeline.Corrections(token=os.environ["USERMAVEN_TOKEN"])
    result = corrections.apply(fixes)          # or: await corrections.apply_async(fixes)
    result.exit_code, result.counts            # 1, {"applied": 14, "not_found": 1}
    result.report()                            # the audit report as a pandas DataFrame

Each call does what the command of the same name does (same checkpoint, keys, report), but
returns its result as data: it installs no signal handlers, never calls `sys.exit`, and prints
nothing (log lines go to the `corrections` logger; attach a handler to see them). Problems that
stop a call raise `pipeline.CorrectionsError` subclasses, whose `exit_code` is the command's.

The synchronous methods also work where an event loop is already running (Jupyter): the job
then runs in a worker thread with its own loop. Code that is itself async should await the
`*_async` variants, which never block the caller's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from pipeline.api_plans import PlanMethods, SavedPlan
from pipeline.checkpoint_jobs import open_existing
from pipeline.errors import UsageError
from pipeline.jobs import (
    SheetJob,
    Target,
    apply_sheet,
    default_checkpoint,
    default_report,
    plan_sheet,
    report_beside,
)
from pipeline.model import RowProblem, SheetDefaults
from pipeline.options import DEFAULT_API_URL
from pipeline.readers.dialect import PLAIN, Dialect
from pipeline.report import COLUMNS, TARGET_COLUMNS, write_report
from pipeline.run_types import RunOptions
from pipeline.target_reports import known_targets, report_lines
from pipeline.targets import primary_only
from pipeline.timeutil import parse_timestamp
from pipeline.validate_job import validate_sheet
from pipeline.wire import check_token

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")

__all__ = ["Corrections", "RunOptions", "RunSummary", "SavedPlan", "Sheet", "ValidationSummary",
           "VerifySummary", "apply", "apply_async", "plan", "plan_async", "report", "validate",
           "verify"]


@dataclass(frozen=True)
class Sheet:
    """A correction sheet and the defaults for rows that do not say (the command's
    `--event-type`, `--match`, `--from`, `--to`, `--merge-mode`, `--sheet-name`, dialect)."""

    path: str | Path
    event_type: str | None = None
    match: str | None = None
    start: str | None = None
    end: str | None = None
    merge_mode: str = "merge"
    sheet_name: str | None = None
    dialect: Dialect = PLAIN

    def job(self) -> SheetJob:
        path = Path(self.path)
        if not path.exists():
            raise UsageError(f"no sheet at {path}")
        defaults = SheetDefaults(
            event_type=self.event_type, match=self.match,
            from_=parse_timestamp(self.start) if self.start else None,
            to=parse_timestamp(self.end, end_of_day=True) if self.end else None,
            merge_mode=self.merge_mode)
        return SheetJob(path, defaults, self.sheet_name, dialect=self.dialect)


def _sheet(sheet: str | Path | Sheet) -> Sheet:
    return sheet if isinstance(sheet, Sheet) else Sheet(sheet)


@dataclass(frozen=True)
class RunSummary:
    """What an `apply` or `plan` did: counts by status, the exit code it implies, the report."""

    command: str
    run_id: str
    counts: dict[str, int]
    by_target: dict[str, dict[str, int]]
    exit_code: int
    checkpoint: Path | None
    report_path: str
    requests: int
    retries: int
    throttled: int
    seconds: float
    _frame: Any = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def report(self) -> pd.DataFrame:
        """The audit (or plan) report, one line per (row, event), as a DataFrame."""
        if self._frame is not None:
            return self._frame.copy()
        assert self.checkpoint is not None
        return report_frame(self.checkpoint)


@dataclass(frozen=True)
class ValidationSummary:
    rows: int
    valid: int
    problems: list[RowProblem]

    @property
    def exit_code(self) -> int:
        return 0 if not self.problems else 2

    def report(self) -> pd.DataFrame:
        """One line per problem: row number, column, message."""
        import pandas as pd

        return pd.DataFrame([{"row_number": p.row_number, "column": p.column,
                              "message": p.message} for p in self.problems],
                            columns=["row_number", "column", "message"])


@dataclass(frozen=True)
class VerifySummary:
    verified: int
    mismatch: int
    pending: int
    unverifiable: int
    requests: int
    exit_code: int
    checkpoint: Path

    def report(self) -> pd.DataFrame:
        return report_frame(self.checkpoint)


class Corrections(PlanMethods):
    """One API (URL and token) and the run options; each method is one command.

    `token` defaults to the USERMAVEN_TOKEN environment variable. `transport` lets tests and
    proxies inject an httpx transport.
    """

    def __init__(self, api_url: str = DEFAULT_API_URL, token: str | None = None, *,
                 options: RunOptions | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._token = token
        self.api_url = api_url
        self.options = options or RunOptions()
        self.transport = transport

    def __repr__(self) -> str:  # never the token
        return f"Corrections(api_url={self.api_url!r})"

    @classmethod
    @contextlib.contextmanager
    def sandbox(cls, options: RunOptions | None = None) -> Iterator[Corrections]:
        """The embedded emulator with the sample events, for as long as the block runs."""
        from pipeline.sandbox.server import SANDBOX_TOKEN, SandboxServer

        with SandboxServer() as server:
            yield cls(server.url, SANDBOX_TOKEN, options=options)

    def _target(self) -> Target:
        token = self._token if self._token is not None else os.environ.get("USERMAVEN_TOKEN")
        if not token:
            raise UsageError("no token: pass token=... or set USERMAVEN_TOKEN")
        return Target.remote(self.api_url, check_token(token))

    # -- the commands, synchronous (also inside a running loop) and async ------------------

    def validate(self, sheet: str | Path | Sheet) -> ValidationSummary:
        """Check every row offline (no token needed); problems as data."""
        return _call(self._validate, _sheet(sheet))

    async def validate_async(self, sheet: str | Path | Sheet) -> ValidationSummary:
        return await asyncio.to_thread(_in_context(self._validate), _sheet(sheet))

    def plan(self, sheet: str | Path | Sheet, *, report: str | Path | None = None
             ) -> RunSummary:
        """Look every row up and show what `apply` would change; mutate nothing."""
        return _call(self._plan, _sheet(sheet), report)

    async def plan_async(self, sheet: str | Path | Sheet, *,
                         report: str | Path | None = None) -> RunSummary:
        return await asyncio.to_thread(_in_context(self._plan), _sheet(sheet), report)

    def apply(self, sheet: str | Path | Sheet, *, checkpoint: str | Path | None = None,
              report: str | Path | None = None, strict: bool = False) -> RunSummary:
        """Resolve, correct and record every row; safe to repeat (resumes the checkpoint).

        Defaults as on the command line: the checkpoint beside the sheet, the report beside
        the checkpoint when one is given, else beside the sheet.
        """
        return _call(self._apply, _sheet(sheet), checkpoint, report, strict)

    async def apply_async(self, sheet: str | Path | Sheet, *,
                          checkpoint: str | Path | None = None,
                          report: str | Path | None = None,
                          strict: bool = False) -> RunSummary:
        return await asyncio.to_thread(_in_context(self._apply), _sheet(sheet), checkpoint,
                                       report, strict)

    def verify(self, checkpoint: str | Path, *, wait: float = 30.0) -> VerifySummary:
        """Look applied events up again; record `verified` or `mismatch` per event."""
        return _call(self._verify, Path(checkpoint), wait)

    async def verify_async(self, checkpoint: str | Path, *, wait: float = 30.0
                           ) -> VerifySummary:
        return await asyncio.to_thread(_in_context(self._verify), Path(checkpoint), wait)

    def report(self, checkpoint: str | Path, *, out: str | Path | None = None
               ) -> pd.DataFrame:
        """The audit report of a checkpoint as a DataFrame (also written to `out` if given)."""
        return report(checkpoint, out=out)

    # -- the work -------------------------------------------------------------------------

    def _validate(self, sheet: Sheet) -> ValidationSummary:
        problems: list[RowProblem] = []
        out = validate_sheet(sheet.job(), problems.append)
        return ValidationSummary(out.rows, out.valid, problems)

    def _plan(self, sheet: Sheet, report: str | Path | None) -> RunSummary:
        import pandas as pd

        job = sheet.job()
        with tempfile.TemporaryDirectory(prefix="corrections-api-") as tmp:
            scratch = Path(tmp) / "plan.parquet"
            outcome = plan_sheet(job, self._target(), self.options, report=scratch,
                                 transport=self.transport)
            frame = pd.read_parquet(scratch)
        if report is not None:
            write_report(frame.itertuples(index=False, name=None), str(report),
                         columns=tuple(frame.columns))
        return _summary("plan", outcome, None, str(report or ""), frame)

    def _apply(self, sheet: Sheet, checkpoint: str | Path | None, report: str | Path | None,
               strict: bool) -> RunSummary:
        job = sheet.job()
        cp = Path(checkpoint) if checkpoint is not None else default_checkpoint(job.sheet)
        out = str(report) if report is not None else str(
            report_beside(cp) if checkpoint is not None else default_report(job.sheet))
        outcome = apply_sheet(job, self._target(), self.options, checkpoint=cp, report=out,
                              strict=strict, transport=self.transport, install_signals=False)
        return _summary("apply", outcome, cp, out, None)

    def _verify(self, checkpoint: Path, wait: float) -> VerifySummary:
        from pipeline.targets import PRIMARY, get

        out = get(PRIMARY).read_back(checkpoint, self._target(), wait=wait,
                                     concurrency=min(self.options.concurrency, 64),
                                     timeout=self.options.timeout, transport=self.transport)
        return VerifySummary(out.verified, out.mismatch, out.pending, out.unverifiable,
                             out.requests, out.exit_code, checkpoint)


def _summary(command: str, outcome: Any, checkpoint: Path | None, report: str,
             frame: Any) -> RunSummary:
    r = outcome.result
    return RunSummary(command, outcome.run_id, dict(outcome.counts), dict(outcome.by_target),
                      outcome.exit_code, checkpoint, report, r.requests, r.retries,
                      r.throttled, r.elapsed, frame)


def report_frame(checkpoint: str | Path) -> pd.DataFrame:
    """Every line of a checkpoint's audit report, in sheet order, as a DataFrame."""
    import pandas as pd

    cp = open_existing(Path(checkpoint))
    try:
        targets = known_targets(cp)
        columns = list(COLUMNS if primary_only(targets) else TARGET_COLUMNS)
        lines = [line if isinstance(line, dict) else dict(zip(columns, line, strict=True))
                 for line in report_lines(cp, None, targets)]
    finally:
        cp.close()
    return pd.DataFrame(lines, columns=columns)


def report(checkpoint: str | Path, *, out: str | Path | None = None) -> pd.DataFrame:
    """A checkpoint's audit report as a DataFrame; also written to `out` (.csv/.parquet/.jsonl)."""
    frame = report_frame(checkpoint)
    if out is not None:
        from pipeline.checkpoint_jobs import reemit_report

        reemit_report(Path(checkpoint), str(out))
    return frame


def _in_context(fn: Callable[..., T]) -> Callable[..., T]:
    """`fn` run in a copy of the caller's context (log bindings travel with it)."""
    ctx = contextvars.copy_context()
    return lambda *args: ctx.run(fn, *args)


def _call(fn: Callable[..., T], *args: Any) -> T:
    """Run a job here, or in a worker thread with its own loop when a loop already runs here
    (a notebook): the jobs drive their own event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn(*args)
    with ThreadPoolExecutor(1, thread_name_prefix="corrections") as pool:
        return pool.submit(_in_context(fn), *args).result()


# -- one call, one job: the module-level shortcuts --------------------------------------------


def _client(api_url: str | None, token: str | None, options: RunOptions | None) -> Corrections:
    return Corrections(api_url or os.environ.get("USERMAVEN_API_URL") or DEFAULT_API_URL,
                       token, options=options)


def validate(sheet: str | Path | Sheet) -> ValidationSummary:
    """Check a sheet offline; see `Corrections.validate`."""
    return Corrections().validate(sheet)


def plan(sheet: str | Path | Sheet, *, api_url: str | None = None, token: str | None = None,
         options: RunOptions | None = None, report: str | Path | None = None) -> RunSummary:
    """Lookups only; see `Corrections.plan`. API URL and token default to the environment."""
    return _client(api_url, token, options).plan(sheet, report=report)


def apply(sheet: str | Path | Sheet, *, api_url: str | None = None, token: str | None = None,
          options: RunOptions | None = None, checkpoint: str | Path | None = None,
          report: str | Path | None = None, strict: bool = False) -> RunSummary:
    """The whole run; see `Corrections.apply`. API URL and token default to the environment."""
    return _client(api_url, token, options).apply(sheet, checkpoint=checkpoint, report=report,
                                                  strict=strict)


def verify(checkpoint: str | Path, *, api_url: str | None = None, token: str | None = None,
           wait: float = 30.0) -> VerifySummary:
    """Look applied events up again; see `Corrections.verify`."""
    return _client(api_url, token, None).verify(checkpoint, wait=wait)


async def plan_async(sheet: str | Path | Sheet, *, api_url: str | None = None,
                     token: str | None = None, options: RunOptions | None = None,
                     report: str | Path | None = None) -> RunSummary:
    """`plan` for code already running an event loop (the caller's loop is never blocked)."""
    return await _client(api_url, token, options).plan_async(sheet, report=report)


async def apply_async(sheet: str | Path | Sheet, *, api_url: str | None = None,
                      token: str | None = None, options: RunOptions | None = None,
                      checkpoint: str | Path | None = None, report: str | Path | None = None,
                      strict: bool = False) -> RunSummary:
    """`apply` for code already running an event loop (the caller's loop is never blocked)."""
    return await _client(api_url, token, options).apply_async(
        sheet, checkpoint=checkpoint, report=report, strict=strict)
