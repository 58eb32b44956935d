"""Stop signals: SIGHUP like SIGTERM, signals at any instant of a run, a whole report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, read_report, write_csv
from fakeapi import FakeApi, order_rows, slow, working

ENV = {"USERMAVEN_TOKEN": "fake-key.fake-token"}


def env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("USERMAVEN_")}, **ENV}


def apply_args(api: FakeApi, sheet: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["apply", str(sheet), "--api-url", api.url, "--checkpoint",
            str(tmp_path / "cp.sqlite"), "--report", str(tmp_path / "audit.csv"), *extra]


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def run_script(script: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    """Python code that prepares a fault, then runs the command line with `args`."""
    code = script + f"\nimport sys\nsys.argv = ['corrections', *{args!r}]\n" + \
        "from pipeline.__main__ import main\nmain()\n"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=120)


def test_sighup_stops_a_run_cleanly_like_sigterm_with_exit_129(tmp_path):
    """SIGHUP (a closed terminal): nothing new leaves, a whole report, exit 129."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(150))
    with FakeApi(slow(working, 0.1)) as api:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline",
                                 *apply_args(api, sheet, tmp_path, "--concurrency", "2")],
                                cwd=REPO, env=env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: api.count("/v1/event-mutation") >= 10)
            proc.send_signal(signal.SIGHUP)
            signalled = time.monotonic()
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == 129, err
        assert api.count(after=signalled) <= 2
    assert "Traceback" not in err and "SIGHUP" in err
    assert len(read_report(tmp_path / "audit.csv")) == 150


def test_a_signal_while_the_report_is_written_leaves_it_whole_and_no_temporary_file(tmp_path):
    """SIGTERM arriving half-way through writing the report: the process is not killed, the
    report is renamed into place whole, and no temporary file is left beside it."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(40))
    script = """
import os, signal
import pipeline.checkpoint_jobs as jobs
real = jobs.write_report
def writing(rows, *a, **kw):
    def then_signal():
        for i, line in enumerate(rows):
            if i == 5:
                os.kill(os.getpid(), signal.SIGTERM)
            yield line
    return real(then_signal(), *a, **kw)
jobs.write_report = writing
"""
    with FakeApi(working) as api:
        res = run_script(script, apply_args(api, sheet, tmp_path))
    assert res.returncode >= 0, res.stderr  # not killed by the signal
    assert "Traceback" not in res.stderr
    assert len(read_report(tmp_path / "audit.csv")) == 40
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_signal_before_the_run_starts_stops_it_before_any_request(tmp_path):
    """SIGTERM in the first instant (while the program is still loading): exit 143, nothing
    sent, every row pending in a whole report."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(20))
    script = """
import os, signal
from pipeline.signals import note_early
note_early()
os.kill(os.getpid(), signal.SIGTERM)
"""
    with FakeApi(working) as api:
        res = run_script(script, apply_args(api, sheet, tmp_path))
        assert api.count() == 0
    assert res.returncode == 143, res.stderr
    assert {r["status"] for r in read_report(tmp_path / "audit.csv")} == {"pending"}


def test_a_signal_during_lookups_cancels_them_before_the_session_closes(tmp_path):
    """SIGTERM while slow lookups are in flight (shorter grace than they take): the lookups
    are cancelled and awaited before the HTTP session closes: no "Session is closed", no
    task left unretrieved, exit 143."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(60))
    with FakeApi(slow(working, 3.0)) as api:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline",
                                 *apply_args(api, sheet, tmp_path, "--concurrency", "8",
                                             "--shutdown-grace", "0.2")],
                                cwd=REPO, env=env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: api.count("/lookup") >= 8)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 143, err
    for bad in ("Traceback", "Session is closed", "never retrieved", "was destroyed"):
        assert bad not in err
    assert {r["status"] for r in read_report(tmp_path / "audit.csv")} == {"pending"}
