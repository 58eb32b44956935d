"""Clean shutdown, atomic reports, and checkpoints that refuse to be misused."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, SAMPLE, read_report, run_cli, write_csv

from pipeline.checkpoint import Checkpoint
from pipeline.errors import CheckpointError
from pipeline.lock import RunLock
from pipeline.report import write_report
from pipeline.sandbox.server import SANDBOX_TOKEN

ENV = {"USERMAVEN_TOKEN": SANDBOX_TOKEN}


def slow_apply(sandbox, tmp_path: Path) -> subprocess.Popen[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("USERMAVEN_")}, **ENV}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "apply", str(SAMPLE / "corrections.csv"),
         "--api-url", sandbox.url, "--checkpoint", str(tmp_path / "cp.sqlite"),
         "--report", str(tmp_path / "audit.csv"), "--concurrency", "2"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_cleanly_with_a_complete_report(sandbox, tmp_path, sig, code):
    """SIGTERM/SIGINT: in-flight requests finish, the report lists every row, exit 143/130."""
    sandbox.set_faults(latency_ms=300)
    proc = slow_apply(sandbox, tmp_path)
    time.sleep(1.5)
    proc.send_signal(sig)
    started = time.monotonic()
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 5
    assert proc.returncode == code, err
    assert "Traceback" not in err and "stopping" in err
    lines = read_report(tmp_path / "audit.csv")
    assert len(lines) == 26
    assert "pending" in {r["status"] for r in lines}
    sandbox.set_faults(latency_ms=0)
    again = run_cli(["apply", str(SAMPLE / "corrections.csv"), "--api-url", sandbox.url,
                     "--checkpoint", str(tmp_path / "cp.sqlite"), "--report",
                     str(tmp_path / "audit.csv")], env=ENV)
    assert again.returncode == 1
    assert sum(r["status"] == "applied" for r in read_report(tmp_path / "audit.csv")) == 15
    assert sandbox.stats()["double_applied"] == []


def test_a_crash_while_writing_the_report_keeps_the_previous_one(tmp_path):
    """The report is written to a temporary file and renamed: no truncated report, no litter."""
    path = tmp_path / "audit.csv"
    write_report([{"row_number": 1, "status": "applied"}], path)
    before = path.read_bytes()

    def rows():
        yield {"row_number": 1, "status": "failed"}
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_report(rows(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.csv"]


def test_the_csv_report_neutralises_spreadsheet_formulas(tmp_path):
    """Cells starting with = + - @ are prefixed so a spreadsheet shows them as text."""
    path = tmp_path / "audit.csv"
    write_report([{"row_number": 2, "lookup_value": '=HYPERLINK("http://x","y")',
                   "error": "+1", "status": "invalid"}], path)
    line = read_report(path)[0]
    assert line["lookup_value"] == "'=HYPERLINK(\"http://x\",\"y\")"
    assert line["error"] == "'+1"


def test_a_checkpoint_of_an_unknown_schema_version_is_refused(tmp_path):
    """A checkpoint written by another version is refused, not reinterpreted."""
    cp = Checkpoint(tmp_path / "cp.sqlite")
    cp.db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    cp.close()
    with pytest.raises(CheckpointError, match="schema version 99"):
        Checkpoint(tmp_path / "cp.sqlite")


def test_a_corrupt_checkpoint_is_refused_with_a_clear_message(sandbox, tmp_path):
    """Random bytes where the checkpoint should be: exit 2, no traceback."""
    (tmp_path / "cp.sqlite").write_bytes(os.urandom(4096))
    res = run_cli(["apply", str(SAMPLE / "corrections.csv"), "--api-url", sandbox.url,
                   "--checkpoint", str(tmp_path / "cp.sqlite")], env=ENV)
    assert res.returncode == 2
    assert "not a usable checkpoint" in res.stderr and "Traceback" not in res.stderr


def test_an_unrelated_sqlite_file_is_not_touched(tmp_path):
    """An SQLite file that is not a checkpoint is refused and left as it was."""
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE precious (x)")
    db.commit()
    db.close()
    with pytest.raises(CheckpointError, match="not a corrections checkpoint"):
        Checkpoint(path)


def test_a_checkpoint_of_another_api_is_refused(sandbox, tmp_path):
    """Resuming against another API URL would resend everything: refused with exit 2."""
    cp = Checkpoint(tmp_path / "cp.sqlite")
    cp.bind_target("https://api.usermaven.com", "abc")
    cp.close()
    res = run_cli(["apply", str(SAMPLE / "corrections.csv"), "--api-url", sandbox.url,
                   "--checkpoint", str(tmp_path / "cp.sqlite")], env=ENV)
    assert res.returncode == 2
    assert "belongs to runs against https://api.usermaven.com" in res.stderr


def test_a_checkpoint_of_another_workspace_is_refused(tmp_path):
    """The same API with another API key (workspace) is refused too."""
    cp = Checkpoint(tmp_path / "cp.sqlite")
    cp.bind_target("https://api.usermaven.com", "workspace-a")
    with pytest.raises(CheckpointError, match="another workspace"):
        cp.bind_target("https://api.usermaven.com", "workspace-b")
    cp.close()


def test_a_lock_left_by_a_killed_run_does_not_block_the_next(tmp_path):
    """The lock dies with its holder: after SIGKILL the next run gets it at once."""
    code = ("import sys, time; from pipeline.lock import RunLock; "
            f"RunLock(__import__('pathlib').Path({str(tmp_path / 'cp.sqlite')!r})).acquire(); "
            "print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    with pytest.raises(Exception, match="holds the lock"):
        RunLock(tmp_path / "cp.sqlite").acquire()
    holder.kill()
    holder.wait()
    holder.stdout.close()
    with RunLock(tmp_path / "cp.sqlite"):
        pass


def test_a_changed_sheet_resumes_and_says_what_is_new_gone_and_done(sandbox, tmp_path):
    """Between runs one row removed and one added: 1 new, 1 gone, the rest already done."""
    rows = [{"event_type": "order_completed", "lookup_key": "order_id", "lookup_value": o,
             "event_time": "2026-09", "set.final_price": "5.00"}
            for o in ("ORD-1001", "ORD-1002", "ORD-1003")]
    sheet = write_csv(tmp_path / "s.csv", rows)
    args = ["apply", str(sheet), "--api-url", sandbox.url, "--checkpoint",
            str(tmp_path / "cp.sqlite")]
    assert run_cli(args, env=ENV).returncode == 0
    write_csv(sheet, rows[1:] + [dict(rows[0], lookup_value="ORD-1004")])
    res = run_cli(args, env=ENV)
    assert res.returncode == 0
    assert "1 new · 2 already done · 1 gone" in res.stdout
    lines = read_report(tmp_path / "cp.audit.csv")
    # the three rows of the sheet, and the removed row's applied mutation (never forgotten)
    assert len(lines) == 4
    assert [r["lookup_value"] for r in lines if r["row_number"] == ""] == ["ORD-1001"]
