"""What a command says while it runs: logs (text or JSON), announcements, row lines, the
summary, and the metrics file. Kept apart from `cli.py` so the commands stay thin."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from pipeline.errors import CorrectionsError
from pipeline.logs import bind_run_id, setup_logging
from pipeline.metrics import RunMetrics
from pipeline.model import SUCCESS, Status
from pipeline.options import config_in_use
from pipeline.readers.dialect import Dialect
from pipeline.summary import print_summary
from pipeline.targets import PRIMARY, chosen

if TYPE_CHECKING:  # the run stack (aiohttp, the engine) loads when a command runs a job
    from pipeline.jobs import ApplyOutcome
    from pipeline.run_types import Delivered

log = logging.getLogger("corrections")


def sheet_dialect(kw: dict[str, Any]) -> Dialect:
    """--delimiter, --encoding and --decimal-comma, checked (exit 2 when unusable)."""
    try:
        return Dialect.of(kw.get("delimiter"), kw.get("encoding"),
                          bool(kw.get("decimal_comma")))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--delimiter/--encoding") from None


def setup_output(kw: dict[str, Any]) -> str:
    """Logging as asked, a run id on every line from here on, and the start announcements."""
    if kw["quiet"] and kw["verbose"]:
        raise click.UsageError("--quiet and --verbose contradict each other; give one of them")
    setup_logging(kw["log_format"], quiet=kw["quiet"], verbose=kw["verbose"])
    from pipeline.jobs import new_run_id

    run_id = new_run_id()
    bind_run_id(run_id)
    _announce(kw)
    return run_id


def _announce(kw: dict[str, Any]) -> None:
    """Say which config file and which API host this run uses, before anything is sent."""
    found = config_in_use(click.get_current_context())
    if found is not None:
        path, implicit = found
        log.info("config file %s%s", path, " (found in the working directory)" if implicit
                 else "", extra={"event": "config", "config": path, "implicit": implicit})
    if PRIMARY in chosen(kw) and not kw.get("sandbox"):
        parts = urlsplit(kw["api_url"])
        host = parts.hostname or kw["api_url"]
        where = f"{host}:{parts.port}" if parts.port else host
        log.info("API host %s", where, extra={"event": "api", "api_host": where})


def row_logger(verbose: bool, log_json: bool) -> Any:
    """Each finished row as a log line (JSON or -v); rows that did not succeed at warning."""

    def on_row(row_number: int, status: Status, error: str | None) -> None:
        if verbose or log_json:
            level = (logging.INFO if status in SUCCESS or status is Status.PLANNED
                     else logging.WARNING)
            log.log(level, "row %s: %s%s", row_number, status.value,
                    f" ({error})" if error else "",
                    extra={"event": "row", "row_number": row_number, "status": status.value,
                           "error": error})

    return on_row


@contextlib.contextmanager
def metrics_on_error(kw: dict[str, Any]) -> Iterator[RunMetrics | None]:
    """The run's metrics file (if asked), also written when the run ends on an error."""
    path: Path | None = kw.get("metrics_file")
    metrics = RunMetrics(path) if path is not None else None
    try:
        yield metrics
    except CorrectionsError as exc:
        if metrics is not None:
            metrics.write(exc.exit_code)
        raise
    except KeyboardInterrupt:
        if metrics is not None:
            metrics.write(130)
        raise


def finish_run(outcome: ApplyOutcome, sheet: str, kw: dict[str, Any],
               metrics: RunMetrics | None) -> None:
    """The summary (always in JSON logs, for people unless --quiet) and the metrics file."""
    log_json = kw["log_format"] == "json"
    if log_json or kw["quiet"]:  # people without --quiet read it in the summary
        _log_stop(outcome)
    if not kw["quiet"] or log_json:
        print_summary(outcome, sheet=sheet, log_json=log_json)
    if metrics is not None:
        parts = _parts(outcome)
        metrics.rows = outcome.by_target or {PRIMARY: outcome.counts}
        metrics.requests = sum(p.requests for p in parts)
        metrics.retries = sum(p.retries for p in parts)
        metrics.throttled = outcome.result.throttled
        try:
            metrics.write(outcome.exit_code, now=time.time())
        except OSError as exc:
            log.error("cannot write --metrics-file %s: %s", metrics.path, exc.strerror or exc,
                      extra={"event": "error", "metrics_file": str(metrics.path)})
            return
        log.info("metrics written to %s", metrics.path,
                 extra={"event": "metrics", "metrics_file": str(metrics.path)})


def _parts(outcome: ApplyOutcome) -> list[Delivered]:
    """The run's result and each target's part of it, each once."""
    return [outcome.result,
            *(d for d in outcome.deliveries.values() if d is not outcome.result)]


def _log_stop(outcome: ApplyOutcome) -> None:
    """A run that stopped early says why at error (fatal) or warning (a clean early stop)."""
    r = outcome.result
    fatal = next((p.fatal for p in _parts(outcome) if p.fatal), None)
    if fatal:
        log.error("the run stopped: %s", fatal, extra={"event": "error",
                                                      "exit_code": outcome.exit_code})
    elif r.stop_reason:
        log.warning("the run stopped early: %s", r.stop_reason,
                    extra={"event": "stopped", "exit_code": outcome.exit_code})


def plan_notes(sheet: str, kw: dict[str, Any]) -> None:
    """What `plan` readers should know about how cells became values."""
    if Path(sheet).suffix.lower() == ".xlsx":
        click.echo("note: Excel number cells are sent as JSON numbers, as the cell holds them, "
                   "not as formatted (a cell showing 149.90 sends 149.9, one showing 00123 "
                   "sends 123); format a column as Text in Excel to send its text")
    if kw.get("decimal_comma"):
        click.echo("note: --decimal-comma: set.* values written like 149,90 are sent as numbers "
                   "(149.9); other text keeps its commas")
