"""The jobs behind the commands, importable and callable without a terminal.

Each job opens what it needs (lock, checkpoint, HTTP client), runs, writes the report from the
checkpoint and returns an outcome; the command line only prints it and picks the exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import secrets
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from pipeline import signals
from pipeline.checkpoint import Checkpoint, workspace_id
from pipeline.checkpoint_jobs import write_run_report
from pipeline.client import UsermavenClient, check_api_url, make_http_client
from pipeline.errors import CorrectionsError, SheetError
from pipeline.faults import checkpoint_write_error
from pipeline.lock import RunLock
from pipeline.logs import current_run_id
from pipeline.model import SUCCESS, Correction, RowProblem, SheetDefaults, Status
from pipeline.progress import RunProgress
from pipeline.readers.dialect import PLAIN, Dialect
from pipeline.redact import url_for_display
from pipeline.report import COLUMNS, report_format
from pipeline.runner import Runner, RunOptions, RunResult
from pipeline.sheet import columns, fingerprint
from pipeline.targets import MPARTICLE, USERMAVEN
from pipeline.targets.mparticle.deliver import MParticleResult, MParticleSetup, rows_left
from pipeline.targets.mparticle.deliver import deliver as deliver_mparticle
from pipeline.targets.mparticle.ledger import (
    Ledger,
    remember_targets,
    report_lines,
)
from pipeline.timeutil import utcnow
from pipeline.transport import AiohttpTransport
from pipeline.validate import validate_batches
from pipeline.validate_job import refuse_invalid

log = logging.getLogger("corrections")

EXIT_OK, EXIT_ROWS, EXIT_USAGE, EXIT_FATAL, EXIT_LOCKED = 0, 1, 2, 3, 75
#: the run's requests were sent and recorded, but its report could not be written
EXIT_NO_REPORT = 4


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
    dialect: Dialect = PLAIN  # separator, encoding, decimal commas
    usermaven: bool = True  # a Usermaven target: its 10 KB attribute limit applies

    @property
    def name(self) -> str:
        return self.label or str(self.sheet)

    def names_explicit_keys(self) -> bool:
        """Whether the sheet has an `idempotency_key` column (read from its header only)."""
        return "idempotency_key" in columns(self.sheet, self.sheet_name, self.dialect)

    def batches(self) -> Iterator[list[Correction | RowProblem]]:
        return validate_batches(self.sheet, self.defaults, batch_size=self.batch_size,
                                sheet_name=self.sheet_name, dialect=self.dialect,
                                usermaven=self.usermaven)


def default_checkpoint(sheet: Path) -> Path:
    return sheet.with_name(f"{sheet.stem}.checkpoint.sqlite")


def default_report(sheet: Path, kind: str = "audit") -> Path:
    return sheet.with_name(f"{sheet.stem}.{kind}.csv")


def report_beside(checkpoint: Path, kind: str = "audit") -> Path:
    """`<checkpoint stem>.<kind>.csv` beside it: `x.checkpoint.sqlite` → `x.audit.csv`."""
    name = checkpoint.name
    for ending in (".checkpoint.sqlite", checkpoint.suffix):
        if ending and name.endswith(ending) and len(name) > len(ending):
            name = name[: -len(ending)]
            break
    return checkpoint.with_name(f"{name}.{kind}.csv")


def new_run_id() -> str:
    """The id the caller bound for its log lines (`logs.bind_run_id`), or a fresh one."""
    return current_run_id() or f"run-{utcnow().strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


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
    targets: tuple[str, ...] = (USERMAVEN,)
    #: rows by status, per target (the summary's `target` dimension)
    by_target: dict[str, dict[str, int]] = field(default_factory=dict)
    mparticle: MParticleResult | None = None


def apply_sheet(job: SheetJob, target: Target | None, options: RunOptions, *,
                checkpoint: Path, report: Path | str, strict: bool = False,
                transport: httpx.AsyncBaseTransport | None = None,
                on_row: Callable[[int, Status, str | None], None] | None = None,
                install_signals: bool = True,
                progress: RunProgress | None = None,
                mparticle: MParticleSetup | None = None) -> ApplyOutcome:
    """The whole run: lock, checkpoint, resolve, mutate, report. Safe to repeat.

    `target` is Usermaven (None: not targeted); `mparticle` adds (or is) the second target,
    delivered after Usermaven so each event's time and key come from its lookup.
    """
    report_format(report)  # also checks the destination can be written: before any request
    if target is None and mparticle is None:
        raise SheetError("no target: give --target usermaven and/or --target mparticle")
    job = replace(job, usermaven=target is not None)
    if strict:
        refuse_invalid(job, mparticle.options if mparticle else None,
                        usermaven=target is not None)
    with RunLock(checkpoint):
        cp = Checkpoint(checkpoint)
        try:
            cp.bind_namespace(options.key_namespace)
            if target is not None:
                cp.bind_target(target.identity or target.api_url, workspace_id(target.token))
            if mparticle is not None:
                Ledger(cp).bind(mparticle.target.name, mparticle.target.workspace)
            # a stop signal is noted (never raised) until the report is renamed into place
            early = signals.noted() if install_signals else []
            with signals.signals_noted(early, install_signals):
                return _run(job, target, options, cp, checkpoint, report, transport, on_row,
                            install_signals, progress,
                            command="plan" if options.plan_only else "apply",
                            mparticle=mparticle, early=early)
        except Exception as exc:
            if (failure := checkpoint_write_error(exc)) is None:
                raise
            raise failure from None
        finally:
            _close(cp)


def plan_sheet(job: SheetJob, target: Target | None, options: RunOptions, *,
               report: Path | str,
               transport: httpx.AsyncBaseTransport | None = None,
               on_row: Callable[[int, Status, str | None], None] | None = None,
               preview: int = 200, mparticle: MParticleSetup | None = None,
               on_checkpoint: Callable[[Checkpoint, ApplyOutcome], None] | None = None,
               ) -> ApplyOutcome:
    """Lookups only: what `apply` would do, in a throwaway checkpoint; nothing is mutated.

    For mParticle the batches are built and routed but not sent (status `planned`).
    `on_checkpoint` sees the throwaway checkpoint before it goes (to save the plan).
    """
    opts = RunOptions(**{**options.__dict__, "plan_only": True})
    with tempfile.TemporaryDirectory(prefix="corrections-plan-") as tmp:
        cp_path = Path(tmp) / "plan.sqlite"
        outcome = apply_sheet(job, target, opts, checkpoint=cp_path, report=report,
                              transport=transport, on_row=on_row, mparticle=mparticle)
        cp = Checkpoint(cp_path)
        try:
            outcome.preview = [
                line if isinstance(line, dict) else dict(zip(COLUMNS, line, strict=True))
                for line in itertools.islice(report_lines(cp, None, outcome.targets), preview)]
            if on_checkpoint is not None:
                on_checkpoint(cp, outcome)
        finally:
            cp.close()
        return outcome


def _run(job: SheetJob, target: Target | None, options: RunOptions, cp: Checkpoint,
         cp_path: Path, report: Path | str, transport: httpx.AsyncBaseTransport | None,
         on_row: Callable[[int, Status, str | None], None] | None, install_signals: bool,
         progress: RunProgress | None, command: str,
         mparticle: MParticleSetup | None = None,
         early: list[int] | None = None) -> ApplyOutcome:
    run_id = new_run_id()
    targets = tuple(t for t, on in ((USERMAVEN, target is not None),
                                    (MPARTICLE, mparticle is not None)) if on)
    safe_options: dict[str, Any] = {k: v for k, v in options.__dict__.items()}
    safe_options["targets"] = list(targets)
    if mparticle is not None:
        safe_options["mparticle"] = {**mparticle.options.__dict__,
                                     "url": mparticle.target.name}
    sheet_fp = fingerprint(job.sheet)
    digest = sheet_digest(job, sheet_fp)
    # A rerun of an unchanged sheet whose rows are all final has nothing to read or send:
    # the checkpoint already holds every row (the nightly "already done" case).
    finished = (targets == (USERMAVEN,) and not options.plan_only
                and cp.sheet_complete(digest)
                and cp.rows_to_work(cp.current_generation(),
                                    retry_unresolved=options.retry_unresolved) == 0)
    generation = cp.start_run(run_id, command, job.name, sheet_fp, safe_options,
                              same_sheet=finished)
    remember_targets(cp, targets)
    log.info("run %s started on %s", run_id, job.name,
             extra={"event": "run_start", "run_id": run_id, "sheet": job.name,
                    "api_url": target.api_url if target else None,
                    "options": safe_options})

    early = [] if early is None else early  # signals noted before the event loop took over

    async def go() -> tuple[RunResult, int | None]:
        assert target is not None
        wire = transport or AiohttpTransport(limit=options.concurrency + 2)
        http = make_http_client(target.api_url, concurrency=options.concurrency,
                                timeout=options.timeout, transport=wire)
        async with http:
            client = UsermavenClient(http, target.token, transport=wire)
            runner = Runner(cp, client, options, run_id=run_id, generation=generation,
                            on_row=on_row, progress=progress)
            if job.names_explicit_keys():
                runner.decider.explicit_keys.learn(job.batches())  # order-independent keys
            with signals.on_loop(asyncio.get_running_loop(), runner.request_stop,
                                 install_signals):
                if early:
                    runner.request_stop(early[0])
                result = await runner.run(job.batches())
            return result, runner.signal_number

    mp: MParticleResult | None = None
    try:
        if finished:
            result, signum = _no_usermaven(run_id), None
            result.totals.rows_done = sum(cp.status_counts(generation).values())
            log.info("nothing to do: the sheet is unchanged and every row is final",
                     extra={"event": "already_done", "rows": result.totals.rows_done})
        elif target is not None:
            result, signum = asyncio.run(go())
        else:
            result, signum = _no_usermaven(run_id), None
        if mparticle is not None:
            mp = _deliver_mparticle(cp, job, mparticle, options, result, signum, run_id,
                                    generation, usermaven=target is not None,
                                    install_signals=install_signals, early=early)
            signum = signum if signum is not None else mp.signal_number
    finally:
        if progress is not None:
            progress.close()
    by_target: dict[str, dict[str, int]] = {}
    counts: dict[str, int] = {}
    events: dict[str, int] = {}
    if target is not None:
        counts = by_target[USERMAVEN] = cp.status_counts(generation)
        events = cp.mutation_counts(generation)
    if mp is not None:
        by_target[MPARTICLE] = Ledger(cp).row_counts(generation)
        if target is None:
            counts = by_target[MPARTICLE]
            result.totals.rows_new, result.totals.rows_done = mp.rows_new, mp.rows_done
    gone = cp.rows_gone(generation)
    exit_code = _exit_code(result, by_target.get(USERMAVEN, {}), signum)
    if mp is not None and mp.fatal:
        exit_code = EXIT_FATAL
    elif mp is not None and exit_code == EXIT_OK and rows_left(by_target[MPARTICLE]):
        exit_code = EXIT_ROWS
    keep = _Bookkeeping()
    if not finished:
        keep(cp.note_change, run_id)
        if not (result.stop_reason or result.fatal or signum is not None):
            keep(cp.mark_complete, generation, digest)
    try:
        lines = write_run_report(cp, generation, targets, report, keep)
    except (OSError, CorrectionsError) as exc:
        # the run's work is done and recorded: say where the report failed, not "exit 2"
        lines = 0
        exit_code = EXIT_NO_REPORT
        result.fatal = result.fatal or (
            f"cannot write the report at {url_for_display(str(report))}: "
            f"{getattr(exc, 'strerror', None) or exc}; everything is in the checkpoint: "
            f"`corrections report --checkpoint {cp_path} --out PATH` writes it again")
        log.error("%s", result.fatal, extra={"event": "report_failed"})
    requests = result.requests + (mp.requests if mp else 0)
    retries = result.retries + (mp.retries if mp else 0)
    keep(cp.finish_run, run_id, exit_code=exit_code, requests=requests,
         retries=retries, rows_new=result.totals.rows_new,
         rows_done=result.totals.rows_done, rows_gone=gone)
    if keep.failure is not None and exit_code != EXIT_FATAL:
        exit_code = EXIT_FATAL
        result.fatal = result.fatal or str(keep.failure)
    log.info("run %s finished: exit %s, %s report lines in %s", run_id, exit_code, lines,
             url_for_display(str(report)),
             extra={"event": "run_end", "run_id": run_id, "exit_code": exit_code,
                    "counts": counts, "requests": requests, "retries": retries,
                    "targets": by_target})
    return ApplyOutcome(run_id, result, counts, events, report, cp_path, gone, exit_code,
                        targets=targets, by_target=by_target, mparticle=mp)


def _close(cp: Checkpoint) -> None:
    """Close the checkpoint; a last commit the disk refuses loses only what the next run
    redoes under the same keys."""
    try:
        cp.close()
    except Exception as exc:
        if (failure := checkpoint_write_error(exc)) is None:
            raise
        log.error("%s", failure, extra={"event": "checkpoint_write_failed"})
        with contextlib.suppress(Exception):
            cp.db.close()


class _Bookkeeping:
    """The run's closing writes to the checkpoint (run record, report stamp): a disk that
    refuses them must not cost the report or the summary, only set exit 3 and say why."""

    def __init__(self) -> None:
        self.failure: Exception | None = None

    def __call__(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except Exception as exc:
            if (failure := checkpoint_write_error(exc)) is None:
                raise
            if self.failure is None:
                self.failure = failure
                log.error("%s", failure, extra={"event": "checkpoint_write_failed"})
            return None


def sheet_digest(job: SheetJob, sheet_fingerprint: str) -> str:
    """What a sheet means: its bytes, the worksheet, and the defaults its rows take."""
    parts: list[Any] = [sheet_fingerprint, job.sheet_name, job.defaults.__dict__]
    if job.dialect != PLAIN:  # read another way, the same bytes mean other rows
        parts.append(job.dialect.describe())
    meaning = json.dumps(parts, default=str, sort_keys=True)
    return hashlib.sha256(meaning.encode()).hexdigest()


def _no_usermaven(run_id: str) -> RunResult:
    """The Usermaven part of a run that does not target Usermaven: nothing done."""
    return RunResult(run_id=run_id)


def _deliver_mparticle(cp: Checkpoint, job: SheetJob, setup: MParticleSetup,
                       options: RunOptions, result: RunResult, signum: int | None, run_id: str,
                       generation: int, *, usermaven: bool, install_signals: bool,
                       early: list[int]) -> MParticleResult:
    """mParticle after Usermaven; not at all when the Usermaven part stopped the run."""
    if result.fatal or signum is not None or result.stop_reason:
        why = result.fatal or result.stop_reason or "stopped"
        log.warning("mparticle: nothing sent: the usermaven part stopped (%s); rerun to "
                    "deliver", why, extra={"event": "mparticle_skipped", "reason": why})
        return MParticleResult(skipped=why)
    return deliver_mparticle(cp, setup, options, job.batches, run_id=run_id,
                             generation=generation, usermaven=usermaven,
                             install_signals=install_signals, early=early)


def _exit_code(result: RunResult, counts: dict[str, int], signum: int | None) -> int:
    if result.fatal:
        return EXIT_FATAL
    if signum is not None:
        return signals.exit_code(signum)
    bad = {s: n for s, n in counts.items() if Status(s) not in SUCCESS
           and Status(s) is not Status.PLANNED}
    return EXIT_ROWS if bad else EXIT_OK


