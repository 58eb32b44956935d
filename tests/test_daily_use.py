"""Small things a daily user trips on: where reports go, contradictory flags, clear messages."""

from __future__ import annotations

from pathlib import Path

from conftest import read_report, run_cli, write_csv

from pipeline.sandbox.server import SANDBOX_TOKEN

ENV = {"USERMAVEN_TOKEN": SANDBOX_TOKEN}
ROW = {"event_type": "order_completed", "lookup_key": "order_id", "lookup_value": "ORD-1002",
       "event_time": "2026-09", "set.final_price": "9.00"}


def apply_with_checkpoint(sandbox, sheet: Path, checkpoint: Path, *extra: str):
    return run_cli(["apply", str(sheet), "--api-url", sandbox.url, "--checkpoint",
                    str(checkpoint), *extra], env=ENV)


def test_quiet_and_verbose_together_are_refused(tmp_path):
    """`-q -v` contradict each other: exit 2 with a message, nothing read or sent."""
    sheet = write_csv(tmp_path / "s.csv", [ROW])
    res = run_cli(["apply", str(sheet), "-q", "-v", "--api-url", "http://127.0.0.1:9"], env=ENV)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "--quiet and --verbose" in res.stderr
    assert not (tmp_path / "s.checkpoint.sqlite").exists()


def test_a_checkpoint_without_a_report_gets_its_report_beside_the_checkpoint(sandbox, tmp_path):
    """`--checkpoint DIR/x.checkpoint.sqlite` alone writes DIR/x.audit.csv, not beside the sheet."""
    sheet = write_csv(tmp_path / "fixes.csv", [ROW])
    (tmp_path / "state").mkdir()
    res = apply_with_checkpoint(sandbox, sheet, tmp_path / "state/nightly.checkpoint.sqlite")
    assert res.returncode == 0, res.stdout + res.stderr
    assert [r["status"] for r in read_report(tmp_path / "state/nightly.audit.csv")] == ["applied"]
    assert not (tmp_path / "fixes.audit.csv").exists()


def test_two_checkpoints_of_one_sheet_never_share_a_report(sandbox, tmp_path):
    """Two runs of one sheet on two checkpoints leave two reports, each its own run's."""
    sheet = write_csv(tmp_path / "fixes.csv", [ROW])
    first = apply_with_checkpoint(sandbox, sheet, tmp_path / "a.sqlite")
    second = apply_with_checkpoint(sandbox, sheet, tmp_path / "b.sqlite", "--key-namespace", "b")
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    a, b = read_report(tmp_path / "a.audit.csv"), read_report(tmp_path / "b.audit.csv")
    assert a[0]["run_id"] != b[0]["run_id"]
    assert a[0]["idempotency_key"] != b[0]["idempotency_key"]


def test_an_explicit_report_still_wins_over_the_checkpoint_default(sandbox, tmp_path):
    """`--report` given with `--checkpoint`: the report goes exactly where asked."""
    sheet = write_csv(tmp_path / "fixes.csv", [ROW])
    res = apply_with_checkpoint(sandbox, sheet, tmp_path / "cp.sqlite",
                                "--report", str(tmp_path / "mine.csv"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "mine.csv").exists() and not (tmp_path / "cp.audit.csv").exists()


def test_verify_with_sandbox_says_how_to_verify_against_the_emulator(tmp_path):
    """`verify --sandbox` cannot see a finished run's changes: exit 2 with the way that works."""
    res = run_cli(["verify", "--checkpoint", str(tmp_path / "cp.sqlite"), "--sandbox"])
    assert res.returncode == 2, res.stdout + res.stderr
    assert "corrections sandbox" in res.stderr and "--api-url" in res.stderr
    assert "Traceback" not in res.stderr


def test_not_found_names_the_window_that_was_searched(sandbox, tmp_path):
    """A row that finds nothing says which window was searched, so a wrong month is obvious."""
    sheet = write_csv(tmp_path / "fixes.csv", [{**ROW, "event_time": "2025-02"}])
    res = apply_with_checkpoint(sandbox, sheet, tmp_path / "cp.sqlite")
    assert res.returncode == 1, res.stderr
    [line] = read_report(tmp_path / "cp.audit.csv")
    assert line["status"] == "not_found"
    assert "2025-02-01T00:00:00.000Z – 2025-02-28T23:59:59.999Z" in line["error"]
