"""The jobs behind the commands, importable and callable without a terminal.

Each job opens what it needs (lock, checkpoint, HTTP client), runs, writes the report from the
checkpoint and returns an outcome; the command line only prints it and picks the exit code.
"""

from __future__ import annotations

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
from pipeline.checkpoint import Checkpoint
from pipeline.checkpoint_jobs import write_run_report
from pipeline.errors import CorrectionsError, SheetError
from pipeline.faults import checkpoint_write_error
from pipeline.lock import RunLock
from pipeline.logs import current_run_id
from pipeline.model import Correction, RowProblem, SheetDefaults, Status
from pipeline.progress import RunProgress
from pipeline.read_once import ReadOnce
from pipeline.readers.dialect import PLAIN, Dialect
from pipeline.redact import url_for_display
from pipeline.report import COLUMNS, report_format
from pipeline.run_types import Delivered, RunOptions, RunResult
from pipeline.sheet import columns, fingerprint
from pipeline.target import RunContext
from pipeline.target_reports import remember_targets, report_lines
from pipeline.targets import MPARTICLE, PRIMARY, get, in_order, primary_only
from pipeline.timeutil import utcnow
from pipeline.validate import validate_batches
from pipeline.validate_job import refuse_invalid
from pipeline.wire import check_api_url

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
    #: how requests travel (tests inject one); None: the keep-alive aiohttp pool
    transport: httpx.AsyncBaseTransport | None = field(default=None, repr=False,
                                                       compare=False)

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

    #: set by `read_once`: the run's passes replay the first one
    spool: ReadOnce | None = field(default=None, repr=False, compare=False)

    def batches(self) -> Iterator[list[Correction | RowProblem]]:
        """The rows, checked, in batches (replayed after the first pass of a run)."""
        return self.spool() if self.spool is not None else self.read()

    def read(self) -> Iterator[list[Correction | RowProblem]]:
        return validate_batches(self.sheet, self.defaults, batch_size=self.batch_size,
                                sheet_name=self.sheet_name, dialect=self.dialect,
                                usermaven=self.usermaven)

    def read_once(self, passes: int = 2) -> SheetJob:
        """This job with its rows parsed once, however many passes (`passes` expected) a
        run makes."""
        if self.spool is not None:
            return self
        return replace(self, spool=ReadOnce(self.read, passes))


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
    targets: tuple[str, ...] = (PRIMARY,)
    #: rows by status, per target (the summary's `target` dimension)
    by_target: dict[str, dict[str, int]] = field(default_factory=dict)
    #: what each target's part of the run did
    deliveries: dict[str, Delivered] = field(default_factory=dict)

    @property
    def mparticle(self) -> Any:
        """The mParticle part's result (None when it was not a target)."""
        return self.deliveries.get(MPARTICLE)


def apply_sheet(job: SheetJob, target: Target | None, options: RunOptions, *,
                checkpoint: Path, report: Path | str, strict: bool = False,
                transport: httpx.AsyncBaseTransport | None = None,
                on_row: Callable[[int, Status, str | None], None] | None = None,
                install_signals: bool = True,
                progress: RunProgress | None = None,
                mparticle: Any = None, extra: dict[str, Any] | None = None) -> ApplyOutcome:
    """The whole run: lock, checkpoint, deliver to each target in turn, report. Safe to repeat.

    `target` is the primary API (Usermaven; None: not targeted). `extra` adds other targets
    by name with their setups (`mparticle=` is the same as `extra={"mparticle": ...}`); they
    deliver after the primary one, from what its lookups found.
    """
    report_format(report)  # also checks the destination can be written: before any request
    setups: dict[str, Any] = dict(extra or {})
    if mparticle is not None:
        setups[MPARTICLE] = mparticle
    if target is not None:
        setups[PRIMARY] = replace(target, transport=transport) if transport else target
    if not setups:
        raise SheetError("no target: give --target usermaven and/or --target mparticle")
    setups = {name: setups[name] for name in in_order(list(setups))}
    job = replace(job, usermaven=target is not None, spool=None)
    # the passes this run makes over the rows: --strict's check, the explicit-key pre-pass
    # of the primary target, and one per target
    explicit = PRIMARY in setups and job.names_explicit_keys()
    job = job.read_once(passes=int(strict) + int(explicit) + len(setups))
    assert job.spool is not None
    try:
        return _apply(job, setups, options, checkpoint, report, strict, on_row,
                      install_signals, progress, explicit)
    finally:
        job.spool.close()


def _apply(job: SheetJob, setups: dict[str, Any], options: RunOptions, checkpoint: Path,
           report: Path | str, strict: bool,
           on_row: Callable[[int, Status, str | None], None] | None,
           install_signals: bool, progress: RunProgress | None,
           explicit: bool) -> ApplyOutcome:
    if strict:
        refuse_invalid(job, {n: get(n).offline_options(s) for n, s in setups.items()
                             if n != PRIMARY}, usermaven=PRIMARY in setups)
    with RunLock(checkpoint):
        cp = Checkpoint(checkpoint)
        try:
            cp.bind_namespace(options.key_namespace)
            for name, setup in setups.items():
                get(name).bind(cp, setup)
            # a stop signal is noted (never raised) until the report is renamed into place
            early = signals.noted() if install_signals else []
            with signals.signals_noted(early, install_signals):
                return _run(job, setups, options, cp, checkpoint, report, on_row,
                            install_signals, progress,
                            command="plan" if options.plan_only else "apply", early=early,
                            explicit=explicit)
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
               preview: int = 200, mparticle: Any = None,
               extra: dict[str, Any] | None = None,
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
                              transport=transport, on_row=on_row, mparticle=mparticle,
                              extra=extra)
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


def _run(job: SheetJob, setups: dict[str, Any], options: RunOptions, cp: Checkpoint,
         cp_path: Path, report: Path | str,
         on_row: Callable[[int, Status, str | None], None] | None, install_signals: bool,
         progress: RunProgress | None, command: str,
         early: list[int] | None = None, explicit: bool = False) -> ApplyOutcome:
    run_id = new_run_id()
    targets = tuple(setups)
    safe_options: dict[str, Any] = {k: v for k, v in options.__dict__.items()}
    safe_options["targets"] = list(targets)
    for name, setup in setups.items():
        if (shown := get(name).describe(setup)) is not None:
            safe_options[name] = shown
    sheet_fp = fingerprint(job.sheet)
    digest = sheet_digest(job, sheet_fp)
    # A rerun of an unchanged sheet whose rows are all final has nothing to read or send:
    # the checkpoint already holds every row (the nightly "already done" case).
    finished = (primary_only(targets) and not options.plan_only
                and cp.sheet_complete(digest)
                and cp.rows_to_work(cp.current_generation(),
                                    retry_unresolved=options.retry_unresolved) == 0)
    generation = cp.start_run(run_id, command, job.name, sheet_fp, safe_options,
                              same_sheet=finished)
    remember_targets(cp, targets)
    primary = setups.get(PRIMARY)
    log.info("run %s started on %s", run_id, job.name,
             extra={"event": "run_start", "run_id": run_id, "sheet": job.name,
                    "api_url": primary.api_url if primary is not None else None,
                    "options": safe_options})
    run = RunContext(cp, job.batches, options, run_id, generation, targets,
                     install_signals=install_signals, early=early or [], on_row=on_row,
                     progress=progress,
                     names_explicit_keys=explicit)
    results: dict[str, Delivered] = {}
    try:
        for name, setup in setups.items():
            stopped = next((r for r in results.values() if r.stopped), None)
            if finished:
                done = RunResult(run_id=run_id)
                done.totals.rows_done = done.rows_done = sum(
                    cp.status_counts(generation).values())
                results[name] = done
                log.info("nothing to do: the sheet is unchanged and every row is final",
                         extra={"event": "already_done", "rows": done.rows_done})
            elif stopped is not None:
                why = stopped.fatal or stopped.stop_reason or "stopped"
                log.warning("%s: nothing sent: an earlier target stopped the run (%s); rerun "
                            "to deliver", name, why,
                            extra={"event": f"{name}_skipped", "reason": why})
                results[name] = get(name).not_sent(why)
            else:
                results[name] = get(name).deliver(run, setup)
    finally:
        if progress is not None:
            progress.close()
    main = results.get(PRIMARY)
    result = main if isinstance(main, RunResult) else RunResult(run_id=run_id)
    if main is None:
        first = results[targets[0]]
        result.totals.rows_new, result.totals.rows_done = first.rows_new, first.rows_done
    by_target = {name: get(name).row_counts(cp, generation) for name in targets}
    counts = by_target[targets[0]]
    events = cp.mutation_counts(generation) if main is not None else {}
    gone = cp.rows_gone(generation)
    exit_code = _exit_code(results, by_target)
    keep = _Bookkeeping()
    if not finished:
        keep(cp.note_change, run_id)
        if not any(r.stopped for r in results.values()):
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
    requests = sum(r.requests for r in results.values())
    retries = sum(r.retries for r in results.values())
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
                        targets=targets, by_target=by_target, deliveries=results)


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


def _exit_code(results: dict[str, Delivered], by_target: dict[str, dict[str, int]]) -> int:
    """Fatal (an outage, a refused token: exit 3) before a signal before rows left (1)."""
    if any(r.fatal for r in results.values()):
        return EXIT_FATAL
    signum = next((r.signal_number for r in results.values() if r.signal_number is not None),
                  None)
    if signum is not None:
        return signals.exit_code(signum)
    if any(get(name).rows_left(counts) for name, counts in by_target.items()):
        return EXIT_ROWS
    return EXIT_OK
