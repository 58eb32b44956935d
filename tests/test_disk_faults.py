"""A checkpoint that cannot be written (disk full, read-only) stops the run cleanly."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLE, read_report, write_csv

from pipeline import jobs
from pipeline.checkpoint import Checkpoint
from pipeline.jobs import SheetJob, Target, apply_sheet
from pipeline.model import SheetDefaults
from pipeline.run_types import RunOptions
from pipeline.sandbox.server import SANDBOX_TOKEN

SYSTEM = {"pageview", "user_identify", "group", "lead"}


def event_rows() -> list[dict[str, str]]:
    """One correction per live, non-system sample event, by event id."""
    with open(SAMPLE / "events.csv", encoding="utf-8", newline="") as fh:
        events = [e for e in csv.DictReader(fh)
                  if e["event_type"] not in SYSTEM and not e["event_type"].startswith("$")
                  and e["_is_deleted"] == "0"]
    return [{"event_id": e["event_id"], "timestamp": e["_timestamp"].replace(" ", "T") + "Z",
             "set.corrected": f"yes-{i}"} for i, e in enumerate(events)]


def run(sandbox, tmp_path: Path, sheet: Path, on_row=None):
    target = Target(sandbox.url, SANDBOX_TOKEN, sandbox.url)
    return apply_sheet(SheetJob(sheet, SheetDefaults()), target,
                       RunOptions(concurrency=4, backoff_base=0.001, backoff_max=0.01),
                       checkpoint=tmp_path / "cp.sqlite", report=tmp_path / "audit.csv",
                       install_signals=False, on_row=on_row)


def total_requests(sandbox) -> int:
    return sum(sandbox.stats()["requests"].values())


@pytest.mark.parametrize(("pragma", "why"), [
    ("PRAGMA query_only = ON", "read-only"),
    ("PRAGMA max_page_count = 1", "disk full"),  # raised to the file's size: no page more
])
def test_a_checkpoint_that_stops_taking_writes_stops_the_run_and_the_rerun_lands_everything_once(
        sandbox, tmp_path, monkeypatch, pragma, why):
    """The checkpoint turns read-only / full after 20 rows: exit 3 naming the cause, at most
    the requests on the wire after it, a report, and a rerun that applies every row once."""
    sandbox.set_faults(latency_ms=20)
    rows = event_rows()
    assert len(rows) > 100
    sheet = write_csv(tmp_path / "s.csv", rows)
    opened: list[Checkpoint] = []

    class Watched(Checkpoint):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            opened.append(self)

    monkeypatch.setattr(jobs, "Checkpoint", Watched)
    broke: dict[str, int] = {}

    def on_row(_n: int, _status: Any, _error: Any) -> None:
        broke.setdefault("seen", 0)
        broke["seen"] += 1
        if broke["seen"] == 20:
            opened[-1].db.execute(pragma)

    class AtTheFailure(logging.Handler):
        """Counts the requests the API had received when the run met the failure."""

        def emit(self, record: logging.LogRecord) -> None:
            if "cannot write the checkpoint" in record.getMessage():
                broke.setdefault("requests", total_requests(sandbox))

    watcher = AtTheFailure()
    logging.getLogger("corrections").addHandler(watcher)
    try:
        first = run(sandbox, tmp_path, sheet, on_row)
    finally:
        logging.getLogger("corrections").removeHandler(watcher)
    assert first.exit_code == 3
    assert first.result.fatal and f"cannot write the checkpoint: {why}" in first.result.fatal
    assert total_requests(sandbox) - broke["requests"] <= 4
    monkeypatch.undo()

    sandbox.set_faults(latency_ms=0)
    second = run(sandbox, tmp_path, sheet)
    assert second.exit_code == 0, second.result.fatal
    lines = read_report(tmp_path / "audit.csv")
    assert len(lines) == len(rows)
    assert {r["status"] for r in lines} == {"applied"}
    stats = sandbox.stats()
    assert stats["double_applied"] == []
    assert stats["mutations"] == len(rows)  # each row's key applied exactly once

