"""The jobs that read a checkpoint back: `status`, `report`, and writing a run's report.

The report is always written from the checkpoint (never from what a run remembers), so a
rerun, a resume or `corrections report` give the same lines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.checkpoint import Checkpoint
from pipeline.errors import SheetError
from pipeline.model import SUCCESS, UNRESOLVED, Status
from pipeline.redact import url_for_display
from pipeline.report import COLUMNS, TARGET_COLUMNS, report_format, write_report
from pipeline.revert import run_history
from pipeline.storage import is_remote
from pipeline.target_reports import known_targets, report_lines, target_counts
from pipeline.targets import primary_only

log = logging.getLogger("corrections")

def write_run_report(cp: Checkpoint, generation: int, targets: tuple[str, ...],
                  report: Path | str, keep: Callable[..., Any] | None = None) -> int:
    """Write the report from the checkpoint, unless that very report is already there.

    The report at a path is current when it was written from the checkpoint's present
    state and the file is untouched since; then a million-line rewrite is skipped.
    """
    stamp = cp.report_stamp(report)
    if stamp is not None and stamp == file_stamp(report):
        log.info("report %s is current; not rewritten", url_for_display(str(report)),
                 extra={"event": "report_current", "report": url_for_display(str(report))})
        return sum(cp.status_counts(generation).values())
    columns = COLUMNS if primary_only(targets) else TARGET_COLUMNS
    if primary_only(targets) and report_format(report) == "csv":
        lines = write_report(cp.report_tuples(generation, for_csv=True), report,
                             columns=columns, csv_ready=True)
    else:
        lines = write_report(report_lines(cp, generation, targets), report, columns=columns)
    if (stamp := file_stamp(report)) is not None:
        (keep or (lambda fn, *a: fn(*a)))(cp.record_report, report, stamp)
    return lines


def file_stamp(report: Path | str) -> str | None:
    """Size and modification time of a local report file (None for s3 or a missing file)."""
    if is_remote(report):
        return None
    try:
        st = Path(report).stat()
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


def open_existing(checkpoint: Path, *, upgrade: bool = False) -> Checkpoint:
    """An existing checkpoint; one of an earlier schema is read as it is unless `upgrade`
    (commands that write to it, under its lock)."""
    if not checkpoint.exists():
        raise SheetError(f"no checkpoint at {checkpoint}; run `corrections apply` first")
    return Checkpoint(checkpoint, create=False, upgrade=upgrade)


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
            "targets": target_counts(cp),
            "last_run": {k: last.get(k) for k in ("run_id", "command", "started_at",
                                                   "finished_at", "sheet", "exit_code",
                                                   "requests", "retries")},
            "runs": run_history(cp),
        }
    finally:
        cp.close()


def reemit_report(checkpoint: Path, out: Path | str) -> int:
    report_format(out)
    cp = open_existing(checkpoint)
    try:
        targets = known_targets(cp)
        columns = COLUMNS if primary_only(targets) else TARGET_COLUMNS
        return write_report(report_lines(cp, None, targets), out, columns=columns)
    finally:
        cp.close()
