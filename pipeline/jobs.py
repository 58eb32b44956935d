"""The jobs behind the commands, importable and callable without a terminal.

Each job opens what it needs (lock, checkpoint, HTTP client), runs, writes the report from the
checkpoint and returns an outcome; the command line only prints it and picks the exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import signal
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from pipeline.checkpoint import Checkpoint, workspace_id
from pipeline.client import UsermavenClient, check_api_url, make_http_client
from pipeline.errors import SheetError
from pipeline.lock import RunLock
from pipeline.model import SUCCESS, UNRESOLVED, Correction, RowProblem, SheetDefaults, Status
from pipeline.progress import RunProgress
from pipeline.report import report_format, write_report
from pipeline.runner import Runner, RunOptions, RunResult
from pipeline.sheet import fingerprint
from pipeline.timeutil import utcnow
from pipeline.validate import validate_batches

log = logging.getLogger("corrections")

EXIT_OK, EXIT_ROWS, EXIT_USAGE, EXIT_FATAL, EXIT_LOCKED = 0, 1, 2, 3, 75
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass(frozen=True)
class Target:
    """Where requests go. The token is held here only, never written anywhere."""

    api_url: str
    token: str = field(repr=False)
    identity: str = ""

    @staticmethod
    def remote(api_url: str, token: str) -> Target:
        return Target(check_api_url(api_url), token, check_api_url(api_url))


@dataclass(frozen=True)
class SheetJob:
    sheet: Path
    defaults: SheetDefaults = field(default_factory=SheetDefaults)
    sheet_name: str | None = None
    batch_size: int = 5000
    label: str | None = None  # what to call the sheet (its URL when read from a bucket)

    @property
    def name(self) -> str:
        return self.label or str(self.sheet)

    def batches(self) -> Iterator[list[Correction | RowProblem]]:
        return validate_batches(self.sheet, self.defaults, batch_size=self.batch_size,
                                sheet_name=self.sheet_name)


def default_checkpoint(sheet: Path) -> Path:
    return sheet.with_name(f"{sheet.stem}.checkpoint.sqlite")


def default_report(sheet: Path, kind: str = "audit") -> Path:
    return sheet.with_name(f"{sheet.stem}.{kind}.csv")


def new_run_id() -> str:
    return f"run-{utcnow().strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


# -- validate -------------------------------------------------------------------------------


@dataclass
class ValidationOutcome:
    rows: int = 0
    valid: int = 0
    problems: int = 0

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.problems == 0 else EXIT_USAGE


def validate_sheet(job: SheetJob,
                   on_problem: Callable[[RowProblem], None] | None = None) -> ValidationOutcome:
    """Read and check every row offline; problems go to `on_problem` as they are found."""
    out = ValidationOutcome()
    for batch in job.batches():
        for item in batch:
            out.rows += 1
            if isinstance(item, RowProblem):
                out.problems += 1
                if on_problem is not None:
                    on_problem(item)
            else:
                out.valid += 1
    return out


# -- apply / plan ---------------------------------------------------------------------------


@dataclass
class ApplyOutcome:
    run_id: str
    result: RunResult
    counts: dict[str, int]
    events: dict[str, int]
    report: Path | str
    checkpoint: Path
    rows_gone: int
    exit_code: int
    preview: list[dict[str, Any]] = field(default_factory=list)


def apply_sheet(job: SheetJob, target: Target, options: RunOptions, *, checkpoint: Path,
                report: Path | str, strict: bool = False,
                transport: httpx.AsyncBaseTransport | None = None,
                on_row: Callable[[int, Status, str | None], None] | None = None,
                install_signals: bool = True,
                progress: RunProgress | None = None) -> ApplyOutcome:
    """The whole run: lock, checkpoint, resolve, mutate, report. Safe to repeat."""
    report_format(report)
    if strict:
        _refuse_invalid(job)
    with RunLock(checkpoint):
        cp = Checkpoint(checkpoint)
        try:
            cp.bind_target(target.identity or target.api_url, workspace_id(target.token))
            return _run(job, target, options, cp, checkpoint, report, transport, on_row,
                        install_signals, progress,
                        command="plan" if options.plan_only else "apply")
        finally:
            cp.close()


def plan_sheet(job: SheetJob, target: Target, options: RunOptions, *, report: Path | str,
               transport: httpx.AsyncBaseTransport | None = None,
               on_row: Callable[[int, Status, str | None], None] | None = None,
               preview: int = 200) -> ApplyOutcome:
    """Lookups only: what `apply` would do, in a throwaway checkpoint; nothing is mutated."""
    opts = RunOptions(**{**options.__dict__, "plan_only": True})
    with tempfile.TemporaryDirectory(prefix="corrections-plan-") as tmp:
        cp_path = Path(tmp) / "plan.sqlite"
        outcome = apply_sheet(job, target, opts, checkpoint=cp_path, report=report,
                              transport=transport, on_row=on_row)
        cp = Checkpoint(cp_path)
        try:
            outcome.preview = list(itertools.islice(cp.report_rows(), preview))
        finally:
            cp.close()
        return outcome


def _refuse_invalid(job: SheetJob) -> None:
    problems: list[str] = []
    n = 0
    for batch in job.batches():
        for item in batch:
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


def _run(job: SheetJob, target: Target, options: RunOptions, cp: Checkpoint, cp_path: Path,
         report: Path | str, transport: httpx.AsyncBaseTransport | None,
         on_row: Callable[[int, Status, str | None], None] | None, install_signals: bool,
         progress: RunProgress | None, command: str) -> ApplyOutcome:
    run_id = new_run_id()
    safe_options = {k: v for k, v in options.__dict__.items()}
    generation = cp.start_run(run_id, command, job.name, fingerprint(job.sheet),
                              safe_options)
    log.info("run %s started on %s", run_id, job.name,
             extra={"event": "run_start", "run_id": run_id, "sheet": job.name,
                    "api_url": target.api_url, "options": safe_options})

    early: list[int] = []  # a signal that arrives before the event loop takes over

    async def go() -> tuple[RunResult, int | None]:
        http = make_http_client(target.api_url, concurrency=options.concurrency,
                                timeout=options.timeout, transport=transport)
        async with http:
            client = UsermavenClient(http, target.token)
            runner = Runner(cp, client, options, run_id=run_id, generation=generation,
                            on_row=on_row, progress=progress)
            loop = asyncio.get_running_loop()
            installed: list[int] = []
            if install_signals:
                for sig in (int(signal.SIGINT), int(signal.SIGTERM)):
                    with contextlib.suppress(NotImplementedError, RuntimeError):
                        loop.add_signal_handler(sig, runner.request_stop, sig)
                        installed.append(sig)
            if early:
                runner.request_stop(early[0])
            try:
                result = await runner.run(job.batches())
            finally:
                for sig in installed:
                    loop.remove_signal_handler(sig)
            return result, runner.signal_number

    with _signals_noted(early, install_signals):
        try:
            result, signum = asyncio.run(go())
        finally:
            if progress is not None:
                progress.close()
    counts = cp.status_counts(generation)
    events = cp.mutation_counts(generation)
    gone = cp.rows_gone(generation)
    exit_code = _exit_code(result, counts, signum)
    lines = write_report(cp.report_rows(generation), report)
    cp.finish_run(run_id, exit_code=exit_code, requests=result.requests,
                  retries=result.retries, rows_new=result.totals.rows_new,
                  rows_done=result.totals.rows_done, rows_gone=gone)
    log.info("run %s finished: exit %s, %s report lines in %s", run_id, exit_code, lines, report,
             extra={"event": "run_end", "run_id": run_id, "exit_code": exit_code,
                    "counts": counts, "requests": result.requests, "retries": result.retries})
    return ApplyOutcome(run_id, result, counts, events, report, cp_path, gone, exit_code)


@contextlib.contextmanager
def _signals_noted(into: list[int], enabled: bool) -> Iterator[None]:
    """Outside the event loop, SIGINT/SIGTERM are noted (not raised) so the run stops cleanly."""
    if not enabled:
        yield
        return
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: nothing to install
            previous[sig] = signal.signal(sig, lambda signum, _frame: into.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _exit_code(result: RunResult, counts: dict[str, int], signum: int | None) -> int:
    if result.fatal:
        return EXIT_FATAL
    if signum is not None:
        return SIGNAL_EXIT.get(signal.Signals(signum), 130)
    bad = {s: n for s, n in counts.items() if Status(s) not in SUCCESS
           and Status(s) is not Status.PLANNED}
    return EXIT_ROWS if bad else EXIT_OK


# -- status / report ------------------------------------------------------------------------


def open_existing(checkpoint: Path) -> Checkpoint:
    if not checkpoint.exists():
        raise SheetError(f"no checkpoint at {checkpoint}; run `corrections apply` first")
    return Checkpoint(checkpoint)


def checkpoint_status(checkpoint: Path) -> dict[str, Any]:
    cp = open_existing(checkpoint)
    try:
        last = cp.last_run() or {}
        counts = cp.status_counts()
        return {
            "checkpoint": str(checkpoint),
            "counts": counts,
            "events": cp.mutation_counts(),
            "left": sum(n for s, n in counts.items() if Status(s) not in SUCCESS),
            "retryable": sum(n for s, n in counts.items()
                             if Status(s) in (Status.PENDING, Status.FAILED)),
            "unresolved": sum(n for s, n in counts.items() if Status(s) in UNRESOLVED),
            "last_run": {k: last.get(k) for k in ("run_id", "command", "started_at",
                                                   "finished_at", "sheet", "exit_code",
                                                   "requests", "retries")},
        }
    finally:
        cp.close()


def reemit_report(checkpoint: Path, out: Path | str) -> int:
    report_format(out)
    cp = open_existing(checkpoint)
    try:
        return write_report(cp.report_rows(), out)
    finally:
        cp.close()
