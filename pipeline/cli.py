"""`corrections`: a thin click layer over `pipeline.jobs`.

Parse and check options, call the job, print its outcome, map exceptions to exit codes.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline import __version__, signals, targets
from pipeline.cli_output import (
    finish_run,
    metrics_on_error,
    plan_notes,
    row_logger,
    setup_output,
    sheet_dialect,
)
from pipeline.errors import CorrectionsError, UsageError
from pipeline.model import RowProblem, SheetDefaults
from pipeline.options import (
    api_options,
    config_option,
    output_options,
    read_token,
    run_options,
    sheet_options,
)
from pipeline.progress import RunProgress, estimate_rows
from pipeline.readers.dialect import PLAIN, Dialect
from pipeline.redact import scrub_urls, url_for_display
from pipeline.storage import is_remote, local_copy, sibling
from pipeline.summary import print_plan_details, print_summary
from pipeline.textsafe import printable
from pipeline.timeutil import TimestampError, parse_timestamp

if TYPE_CHECKING:  # the run stack loads when a command runs, not for --help
    from pipeline.jobs import SheetJob, Target
    from pipeline.run_types import RunOptions
from pipeline.validate_job import validate_sheet


def _say(message: str, *, err: bool = False) -> None:
    """Print one line for a person; values in it (sheet cells, file names, server messages)
    are escaped so they can never drive the terminal."""
    click.echo(printable(scrub_urls(message)), err=err)


class _Group(click.Group):
    """Turns the pipeline's own errors into a message and an exit code, never a traceback.

    `sandbox` is loaded on first use: the emulator's server stack is not needed by the
    commands a cron job runs, and leaving it out keeps their start-up short.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "sandbox"])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name == "sandbox":
            from pipeline.sandbox.command import sandbox_command

            return sandbox_command
        return super().get_command(ctx, name)

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        """Only `apply` and `plan` keep noting stop signals (they stop cleanly on their
        own); every other command gets the usual behaviour back."""
        name, command, rest = super().resolve_command(ctx, args)
        if name not in ("apply", "plan"):
            signals.release_early()
        return name, command, rest

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CorrectionsError as exc:
            log = logging.getLogger("corrections")
            if any(not isinstance(h, logging.NullHandler) for h in log.handlers):
                log.error("%s", exc, extra={"event": "error", "exit_code": exc.exit_code})
            else:
                _say(f"corrections: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            _say("corrections: interrupted", err=True)
            ctx.exit(130)
        except OSError as exc:  # a file we were pointed at cannot be read or written
            where = f" {exc.filename}" if exc.filename else ""
            _say(f"corrections: error:{where}: {exc.strerror or exc}", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "max_content_width": 100})
@click.version_option(__version__, prog_name="corrections")
def main() -> None:
    """Correct analytics events after ingestion, exactly once, with an audit report.

    \b
    Typical use:
      corrections validate fixes.csv
      corrections plan fixes.csv --match order_id --event-type order_completed
      corrections apply fixes.csv --match order_id --event-type order_completed
      corrections status --checkpoint fixes.checkpoint.sqlite

    Try it with no account at all: `corrections apply --sandbox sample_data/corrections.csv`.
    """


def _defaults(event_type: str | None, match: str | None, from_: str | None, to: str | None,
              merge_mode: str) -> SheetDefaults:
    def when(value: str | None, name: str, end: bool) -> Any:
        if not value:
            return None
        try:
            return parse_timestamp(value, end_of_day=end)
        except TimestampError as exc:
            raise click.BadParameter(str(exc), param_hint=name) from None

    return SheetDefaults(event_type=event_type, match=match, from_=when(from_, "--from", False),
                         to=when(to, "--to", True), merge_mode=merge_mode)


def _sheet_path(sheet: str) -> Path:
    path = Path(sheet)
    if not path.exists():
        raise UsageError(f"no sheet at {sheet}")
    return path


@contextlib.contextmanager
def _sheet(sheet: str, defaults: SheetDefaults, sheet_name: str | None, kind: str,
           report: str | None, checkpoint: Path | None,
           dialect: Dialect = PLAIN) -> Iterator[tuple[SheetJob, Path, str]]:
    """The job for SHEET (a local copy when it is an s3:// URL), its checkpoint and report.

    Defaults: the report beside the sheet (in the bucket for a remote sheet), or beside an
    explicit --checkpoint (`<checkpoint stem>.audit.csv`); the checkpoint beside a local
    sheet, or in the working directory for a remote one (SQLite needs a local disk).
    """
    from pipeline.jobs import SheetJob, default_checkpoint, default_report, report_beside

    if checkpoint is not None and report is None:
        # one checkpoint, one report: two checkpoints of one sheet never share a report
        report = str(report_beside(checkpoint, kind))
    if is_remote(sheet):
        with local_copy(sheet) as local:
            name = f"{local.stem}.{kind}.csv"
            yield (SheetJob(local, defaults, sheet_name, label=url_for_display(sheet),
                            dialect=dialect),
                   checkpoint or default_checkpoint(Path.cwd() / local.name),
                   report or sibling(sheet, name))
        return
    path = _sheet_path(sheet)
    yield (SheetJob(path, defaults, sheet_name, dialect=dialect),
           checkpoint or default_checkpoint(path),
           report or str(default_report(path, kind)))


@contextlib.contextmanager
def _target(api_url: str, token_file: Path | None, sandbox: bool,
            kw: dict[str, Any] | None = None, plan: bool = False
            ) -> Iterator[tuple[Target | None, dict[str, Any]]]:
    """The primary API (None when not targeted) and the other targets' setups by name;
    with --sandbox, one emulator serving them all, started for the length of the run."""
    from pipeline.jobs import Target
    from pipeline.wire import check_token

    kw = kw or {}
    primary = targets.PRIMARY in targets.chosen(kw)
    if sandbox:
        from pipeline.sandbox.server import SANDBOX_TOKEN, SandboxServer

        with SandboxServer() as server:
            logging.getLogger("corrections").info(
                "sandbox started at %s with the sample events", server.url,
                extra={"event": "sandbox", "url": server.url})
            yield (Target(server.url, SANDBOX_TOKEN, "sandbox") if primary else None,
                   targets.setups(kw, sandbox_url=server.url, need_credentials=False))
        return
    extra = targets.setups(kw, sandbox_url=None, need_credentials=not plan)
    if not primary:
        yield None, extra
        return
    token = check_token(read_token(token_file, lambda m: _say(f"corrections: warning: {m}",
                                                                     err=True)))
    yield Target.remote(api_url, token), extra


def _run_options(kw: dict[str, Any]) -> RunOptions:
    from pipeline.run_types import RunOptions

    names = RunOptions.__dataclass_fields__.keys()
    return RunOptions(**{k: v for k, v in kw.items() if k in names})


@main.command()
@click.argument("sheet")
@sheet_options
@targets.target_options
@config_option
def validate(sheet: str, sheet_name: str | None, **kw: Any) -> None:
    """Check every row of SHEET offline and list the problems by row number.

    With --target mparticle, rows are also checked against mParticle's documented limits
    (user identity, attribute count, name and value lengths, batch size).
    Exits 0 when every row is valid, 2 otherwise. Sends nothing.

    \b
    Example:
      corrections validate fixes.csv --match order_id --event-type order_completed
    """
    defaults = _defaults(kw["event_type"], kw["match"], kw["from_"], kw["to"], kw["merge_mode"])
    with _sheet(sheet, defaults, sheet_name, "audit", None, None,
                sheet_dialect(kw)) as (job, _cp, _report):
        _validate(job, kw)


def _validate(job: SheetJob, kw: dict[str, Any] | None = None) -> None:

    def on_problem(p: RowProblem) -> None:
        _say(str(p))

    out = validate_sheet(job, on_problem,
                         usermaven=targets.PRIMARY in targets.chosen(kw or {}),
                         extra=targets.offline_options(kw or {}))
    _say(f"{out.rows} rows: {out.valid} valid, {out.problems} invalid", err=True)
    sys.exit(out.exit_code)


@main.command()
@click.argument("sheet", required=False)
@sheet_options
@api_options
@targets.target_options
@targets.api_options
@run_options
@click.option("--report", metavar="PATH|s3://…",
              help="Audit report (.csv, .parquet, .jsonl; default <sheet stem>.audit.csv).")
@click.option("--strict", is_flag=True, help="Send nothing if any row is invalid (exit 2).")
@click.option("--plan", "plan", metavar="PLAN", help="Apply this saved plan (instead of SHEET).")
@click.option("--expect-digest", metavar="sha256:HEX", help="Refuse a plan with another digest.")
@click.option("--no-refresh", is_flag=True, help="With --plan: send without reading each "
              "event again first (its guard is not checked).")
@output_options
@click.option("--metrics-file", type=click.Path(dir_okay=False, path_type=Path),
              metavar="PATH.prom", help="Write run metrics for the Prometheus textfile "
              "collector (atomically, at the end and on a stop).")
@config_option
def apply(sheet: str | None, **kw: Any) -> None:
    """Resolve, correct and record every row of SHEET; safe to rerun after any failure.

    A rerun of the same command resumes from the checkpoint and never applies a change
    twice. Exit codes: 0 all rows succeeded, 1 some failed or are unresolved, 2 usage or
    sheet error, 3 authentication/fatal API error, 75 checkpoint locked, 130/143 interrupted.

    With --target mparticle (repeatable with usermaven) each correction is also sent to the
    mParticle Events API as data for the user; credentials from MPARTICLE_API_KEY and
    MPARTICLE_API_SECRET. Each (row, target) has its own status.

    \b
    Example:
      export USERMAVEN_TOKEN=API_KEY.SERVER_TOKEN
      corrections apply fixes.csv --event-type order_completed --match order_id \\
          --from 2026-03-01 --to 2026-03-31
      corrections apply --plan fixes.plan.json --expect-digest sha256:…
    """
    if kw["plan"] is not None or sheet is None:
        from pipeline.cli_plans import apply_plan

        apply_plan(sheet, kw)
    assert sheet is not None
    setup_output(kw)
    defaults = _defaults(kw["event_type"], kw["match"], kw["from_"], kw["to"], kw["merge_mode"])
    with (metrics_on_error(kw) as metrics,
          _sheet(sheet, defaults, kw["sheet_name"], "audit", kw["report"],
                 kw["checkpoint"], sheet_dialect(kw)) as (job, checkpoint, report),
          _target(kw["api_url"], kw["token_file"], kw["sandbox"], kw) as (target, extra)):
        from pipeline.jobs import apply_sheet

        progress = RunProgress.for_terminal(
            estimate_rows(job.sheet) if RunProgress.shown(kw["quiet"]) else None,
            quiet=kw["quiet"])
        outcome = apply_sheet(job, target, _run_options(kw), checkpoint=checkpoint,
                              report=report, strict=kw["strict"], progress=progress,
                              on_row=row_logger(kw["verbose"], kw["log_format"] == "json"),
                              extra=extra)
    finish_run(outcome, sheet, kw, metrics)
    sys.exit(outcome.exit_code)


@main.command()
@click.argument("sheet")
@sheet_options
@api_options
@targets.target_options
@targets.api_options
@run_options
@click.option("--report", metavar="PATH|s3://…",
              help="Plan report (default <sheet stem>.plan.csv).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the plan file (.plan.json) for `apply --plan`.")
@output_options
@config_option
def plan(sheet: str, **kw: Any) -> None:
    """Show what `apply` would change, event by event (before → after); mutate nothing.

    Makes lookups only and writes a plan report with the audit report's columns, statuses
    `planned`, `unchanged`, `drifted`, `not_found`, `ambiguous`, `invalid`. With --out, also
    writes the plan file and prints its digest: `apply --plan` sends exactly its items.

    \b
    Example:
      corrections plan fixes.csv --event-type order_completed --match order_id
      corrections plan fixes.csv --match order_id --out fixes.plan.json
    """
    setup_output(kw)
    defaults = _defaults(kw["event_type"], kw["match"], kw["from_"], kw["to"], kw["merge_mode"])
    with (_sheet(sheet, defaults, kw["sheet_name"], "plan", kw["report"], None,
                 sheet_dialect(kw))
          as (job, _checkpoint, report),
          _target(kw["api_url"], kw["token_file"], kw["sandbox"], kw, plan=True)
          as (target, extra)):
        from pipeline.jobs import plan_sheet

        saved: dict[str, Any] = {}
        hook = None
        if kw["out"] is not None:
            from pipeline.plan_jobs import plan_saver

            if target is None:
                raise UsageError("a saved plan is built on Usermaven's lookups (they name "
                                 "each event and its time); add --target usermaven")
            hook = plan_saver(kw["out"], job, target, _run_options(kw), saved, extra)
        outcome = plan_sheet(job, target, _run_options(kw), report=report, extra=extra,
                             on_checkpoint=hook)
    if not kw["quiet"]:
        print_plan_details(outcome)
        plan_notes(sheet, kw)
    if not kw["quiet"] or kw["log_format"] == "json":
        print_summary(outcome, sheet=sheet, log_json=kw["log_format"] == "json")
    if saved:
        from pipeline.cli_plans import echo_saved

        echo_saved(kw["out"], saved)
    sys.exit(outcome.exit_code)


def _register_commands() -> None:
    from pipeline.cli_checkpoint import report, status, verify_command
    from pipeline.cli_plans import revert_command

    for command in (status, report, verify_command, revert_command):
        main.add_command(command)


_register_commands()
