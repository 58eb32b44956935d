"""The one-screen summary printed after a run, and the plan's before → after listing."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from pipeline.jsontypes import json_type, same_json
from pipeline.model import Status
from pipeline.targets import PRIMARY, get, primary_only
from pipeline.textsafe import printable

if TYPE_CHECKING:
    from pipeline.jobs import ApplyOutcome

_ORDER = [s.value for s in (
    Status.APPLIED, Status.ACCEPTED, Status.UNCHANGED, Status.DUPLICATE, Status.PLANNED,
    Status.VERIFIED,
    Status.INVALID, Status.NOT_FOUND, Status.AMBIGUOUS, Status.CONFLICT, Status.REJECTED,
    Status.FAILED, Status.MISMATCH, Status.PENDING,
)]
_MEANING = {
    0: "every row ended in a success state",
    1: "some rows failed or are unresolved: see the status and error columns of the report",
    3: "the API refused the token or failed fatally: the run stopped, rows stay pending",
    130: "interrupted (SIGINT) after a clean stop; rerun the same command to resume",
    143: "terminated (SIGTERM) after a clean stop; rerun the same command to resume",
}


def print_summary(outcome: ApplyOutcome, *, sheet: Path | str, log_json: bool = False,
                  out: TextIO | None = None) -> None:
    r = outcome.result
    t = r.totals
    total = sum(outcome.counts.values())
    echo = _echo(out)
    if log_json:
        logging.getLogger("corrections").info("summary", extra={
            "event": "summary", "run_id": outcome.run_id, "sheet": str(sheet),
            "rows": total, "counts": outcome.counts, "events": outcome.events,
            "rows_new": t.rows_new, "rows_done": t.rows_done, "rows_gone": outcome.rows_gone,
            "requests": r.requests, "lookups": r.lookups, "mutations": r.mutations,
            "retries": r.retries, "throttled": r.throttled, "seconds": round(r.elapsed, 3),
            "report": str(outcome.report), "checkpoint": str(outcome.checkpoint),
            "exit_code": outcome.exit_code, "stopped": r.stop_reason,
            "targets": outcome.by_target,
            **{name: get(name).summary(d) for name, d in outcome.deliveries.items()
               if name != PRIMARY},
        })
        return
    echo(f"run {outcome.run_id} · {sheet}")
    echo(f"rows: {total} in the sheet · {t.rows_new} new · {t.rows_done} already done · "
         f"{outcome.rows_gone} gone since earlier runs")
    if not primary_only(outcome.targets):
        for target, counts in outcome.by_target.items():
            echo(f"{target}:")
            _counts(echo, counts)
    else:
        _counts(echo, outcome.counts)
    echo(f"requests: {r.requests} ({r.lookups} lookups, {r.mutations} mutations) · "
         f"retries {r.retries} · throttled {r.throttled} · "
         f"{r.elapsed:.1f} s ({_rate(t.rows_worked, r.elapsed)})")
    if t.reconciled:
        echo(f"reconciled without resending: {t.reconciled}")
    if r.stop_reason:
        echo(f"stopped: {r.stop_reason}")
    for name, d in outcome.deliveries.items():
        if name != PRIMARY:
            for line in get(name).summary_lines(d, outcome.result.stop_reason):
                echo(line)
    echo(f"report: {outcome.report}")
    if outcome.checkpoint.exists():  # a plan's checkpoint is temporary
        echo(f"checkpoint: {outcome.checkpoint}")
    echo(f"exit {outcome.exit_code}: {_MEANING.get(outcome.exit_code, '')}")


def _counts(echo: Any, counts: dict[str, int]) -> None:
    for name in sorted(counts, key=lambda s: _ORDER.index(s) if s in _ORDER else 99):
        echo(f"  {name:<10} {counts[name]:>8}")


def print_plan_details(outcome: ApplyOutcome, out: TextIO | None = None) -> None:
    """Per event, each attribute old → new (the first lines; the plan report has all)."""
    echo = _echo(out)
    for line in outcome.preview:
        for text in _plan_lines(line):
            echo(text)
    if len(outcome.preview) < sum(outcome.counts.values()):
        echo(f"… the whole plan is in {outcome.report}")


def _plan_lines(line: dict[str, Any]) -> list[str]:
    """The lines for one plan entry (each printed escaped: values may hold anything)."""
    head = f"row {line['row_number']}: {line['status']}"
    if line.get("target"):
        head = f"row {line['row_number']} → {line['target']}: {line['status']}"
    if line["event_id"]:
        head += f" {line['event_id']}"
    if line["status"] in ("planned", "unchanged") and line["attributes_after"]:
        after = json.loads(line["attributes_after"])
        before = json.loads(line["attributes_before"]) if line["attributes_before"] else None
        if line["error"]:
            head += f" — {line['error']}"
        parts = []
        for k, v in after.items():
            if before is None:
                parts.append(f"{k}: ? → {json.dumps(v, ensure_ascii=False)}")
            elif k in before and same_json(before[k], v):
                parts.append(f"{k}: {json.dumps(v, ensure_ascii=False)} (already)")
            else:
                old = json.dumps(before[k], ensure_ascii=False) if k in before else "(absent)"
                kind = ""
                if k in before and None not in (before[k], v) and \
                        json_type(before[k]) != json_type(v):
                    kind = f" (type {json_type(before[k])} → {json_type(v)})"
                parts.append(f"{k}: {old} → {json.dumps(v, ensure_ascii=False)}{kind}")
        return [head, *(f"    {part}" for part in parts)]
    if line["error"]:
        head += f" — {line['error']}"
    return [head]


def _rate(rows: int, seconds: float) -> str:
    if seconds <= 0 or rows == 0:
        return "0 rows/s"
    return f"{rows / seconds:.0f} rows/s"


def _echo(out: TextIO | None) -> Any:
    """Print one line, escaped: a sheet value or server message never drives the terminal."""
    def echo(text: str) -> None:
        click.echo(printable(text), file=out)
    return echo
