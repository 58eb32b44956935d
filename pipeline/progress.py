"""Live progress on a terminal (rich), and nothing at all when stderr is not one.

Cron jobs and log shippers get clean stderr; a person at a terminal sees rows done of the
total, the rate, the ETA, counts by status and retries.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

from pipeline.model import Status


def estimate_rows(path: Path) -> int | None:
    """Rows in a sheet, cheaply: Parquet metadata, or newlines of a CSV (minus the header)."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        if suffix == ".csv":
            n = 0
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    n += chunk.count(b"\n")
            return max(0, n - 1)
    except OSError:
        return None
    return None


class RunProgress:
    """Counts rows as they finish; draws only when enabled (a terminal, not --quiet)."""

    def __init__(self, total: int | None, *, enabled: bool, stream: TextIO | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self.retries = 0
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if enabled:
            from rich.console import Console  # only a terminal needs it
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            console = Console(file=stream or sys.stderr, force_terminal=True)
            self._progress = Progress(
                TextColumn("[bold]rows"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn(),
                TextColumn("{task.fields[counts]}"),
                console=console, transient=False, refresh_per_second=4,
            )
            self._task = self._progress.add_task("rows", total=total, rate="", counts="")
            self._progress.start()

    @staticmethod
    def for_terminal(total: int | None, *, quiet: bool) -> RunProgress:
        return RunProgress(total, enabled=RunProgress.shown(quiet))

    @staticmethod
    def shown(quiet: bool) -> bool:
        """Whether a progress bar is drawn (a person at a terminal who did not ask quiet)."""
        return (not quiet) and sys.stderr.isatty()

    def row(self, status: Status) -> None:
        self.counts[status.value] += 1
        self._advance(1)

    def skipped(self, n: int) -> None:
        """Rows a rerun finds already done."""
        if n:
            self.counts["already done"] += n
            self._advance(n)

    def retry(self) -> None:
        self.retries += 1

    def _advance(self, n: int) -> None:
        if self._progress is None or self._task is None:
            return
        task = self._progress.tasks[0]
        speed = task.speed
        counts = " ".join(f"{k} {v}" for k, v in self.counts.most_common())
        if self.retries:
            counts += f" · retries {self.retries}"
        self._progress.update(self._task, advance=n, counts=counts,
                              rate=f"{speed:.0f}/s" if speed else "")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
