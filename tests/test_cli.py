"""The command line as users meet it: exit codes, messages, and what must never be printed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conftest import SAMPLE, read_report, run_cli, write_csv

from pipeline.lock import RunLock
from pipeline.sandbox.server import SANDBOX_TOKEN

SECRET_PART = SANDBOX_TOKEN.split(".", 1)[1]


def apply_args(sandbox, tmp_path: Path, sheet: Path, *extra: str) -> list[str]:
    return ["apply", str(sheet), "--api-url", sandbox.url, "--checkpoint",
            str(tmp_path / "cp.sqlite"), "--report", str(tmp_path / "audit.csv"),
            "--backoff-base", "0.001", "--backoff-max", "0.01", *extra]


def test_apply_exits_1_when_some_rows_fail_and_prints_a_summary(sandbox, tmp_path):
    """The sample sheet has failing rows: exit 1, with counts by status on stdout."""
    res = run_cli(apply_args(sandbox, tmp_path, SAMPLE / "corrections.csv"),
                  env={"USERMAVEN_TOKEN": SANDBOX_TOKEN})
    assert res.returncode == 1, res.stderr
    assert "applied          15" in res.stdout
    assert "report: " in res.stdout and "Traceback" not in res.stderr


def test_apply_exits_0_when_every_row_succeeds(sandbox, tmp_path):
    """All rows applied or unchanged: exit 0."""
    sheet = write_csv(tmp_path / "s.csv", [{
        "event_type": "order_completed", "lookup_key": "order_id", "lookup_value": "ORD-1002",
        "event_time": "2026-09", "set.final_price": "9.00"}])
    res = run_cli(apply_args(sandbox, tmp_path, sheet), env={"USERMAVEN_TOKEN": SANDBOX_TOKEN})
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_refused_token_stops_the_run_with_exit_3_and_rows_stay_pending(sandbox, tmp_path):
    """401: exit 3, a clear message, no row marked failed, nothing applied."""
    res = run_cli(apply_args(sandbox, tmp_path, SAMPLE / "corrections.csv"),
                  env={"USERMAVEN_TOKEN": "wrong-key.wrong-secret"})
    assert res.returncode == 3, res.stdout + res.stderr
    assert "refused the token" in res.stdout + res.stderr
    lines = read_report(tmp_path / "audit.csv")
    assert not [r for r in lines if r["status"] in ("failed", "applied")]
    assert "pending" in {r["status"] for r in lines}
    assert sandbox.stats()["mutations"] == 0


def test_a_second_run_on_a_locked_checkpoint_exits_75(sandbox, tmp_path):
    """While another run holds the lock, apply exits 75 and says so."""
    with RunLock(tmp_path / "cp.sqlite"):
        res = run_cli(apply_args(sandbox, tmp_path, SAMPLE / "corrections.csv"),
                      env={"USERMAVEN_TOKEN": SANDBOX_TOKEN})
    assert res.returncode == 75
    assert "holds the lock" in res.stderr
    assert sandbox.stats()["requests"] == {"lookup": 0, "mutation": 0}


def test_the_token_appears_nowhere_in_output_checkpoint_or_report(sandbox, tmp_path):
    """Neither stdout, stderr (json logs, verbose), the checkpoint nor the report hold it."""
    for extra in ([], ["--log-format", "json", "--verbose"]):
        res = run_cli(apply_args(sandbox, tmp_path, SAMPLE / "corrections.csv", *extra),
                      env={"USERMAVEN_TOKEN": SANDBOX_TOKEN})
        assert res.returncode == 1
        assert SECRET_PART not in res.stdout + res.stderr
    res = run_cli(apply_args(sandbox, tmp_path, SAMPLE / "corrections.csv"),
                  env={"USERMAVEN_TOKEN": "wrong-key.very-secret-value"})
    assert "very-secret-value" not in res.stdout + res.stderr
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert SECRET_PART.encode() not in data, path
        assert b"very-secret-value" not in data, path


def test_a_token_file_readable_by_others_is_warned_about(sandbox, tmp_path):
    """--token-file works, and a world-readable one gets a warning (without the token)."""
    token = tmp_path / "token"
    token.write_text(SANDBOX_TOKEN + "\n")
    token.chmod(0o644)
    sheet = write_csv(tmp_path / "s.csv", [{
        "event_type": "order_completed", "lookup_key": "order_id", "lookup_value": "ORD-1002",
        "event_time": "2026-09", "set.final_price": "9.00"}])
    res = run_cli(apply_args(sandbox, tmp_path, sheet, "--token-file", str(token)))
    assert res.returncode == 0, res.stderr
    assert "readable by other users" in res.stderr and SECRET_PART not in res.stderr


def test_no_token_is_a_usage_error_with_exit_2(tmp_path):
    """Without USERMAVEN_TOKEN or --token-file: exit 2 and what to do."""
    res = run_cli(["apply", str(SAMPLE / "corrections.csv"), "--checkpoint",
                   str(tmp_path / "cp.sqlite")])
    assert res.returncode == 2
    assert "USERMAVEN_TOKEN" in res.stderr


def test_a_malformed_token_is_refused_without_echoing_it(tmp_path):
    """A token without the API_KEY.SERVER_TOKEN shape: exit 2; the value is not printed."""
    res = run_cli(["apply", str(SAMPLE / "corrections.csv"), "--checkpoint",
                   str(tmp_path / "cp.sqlite")], env={"USERMAVEN_TOKEN": "nodotsecret123"})
    assert res.returncode == 2
    assert "API_KEY.SERVER_TOKEN" in res.stderr and "nodotsecret123" not in res.stderr


def test_plain_http_to_a_remote_host_is_refused(tmp_path):
    """--api-url http:// to a non-loopback host: exit 2 before anything is sent."""
    res = run_cli(["apply", str(SAMPLE / "corrections.csv"), "--api-url",
                   "http://api.example.com", "--checkpoint", str(tmp_path / "cp.sqlite")],
                  env={"USERMAVEN_TOKEN": SANDBOX_TOKEN})
    assert res.returncode == 2
    assert "plain http" in res.stderr


def test_strict_refuses_a_sheet_with_invalid_rows_and_sends_nothing(sandbox, tmp_path):
    """--strict: any invalid row means exit 2, the row numbers listed, no request."""
    res = run_cli(apply_args(sandbox, tmp_path, SAMPLE / "corrections.csv", "--strict"),
                  env={"USERMAVEN_TOKEN": SANDBOX_TOKEN})
    assert res.returncode == 2
    assert "row 19" in res.stderr and "row 21" in res.stderr
    assert sandbox.stats()["requests"] == {"lookup": 0, "mutation": 0}
    assert not (tmp_path / "cp.sqlite").exists()


def test_an_unknown_column_is_a_sheet_error_with_exit_2(sandbox, tmp_path):
    """A typo'd column stops the run before anything is sent, naming the column."""
    sheet = write_csv(tmp_path / "s.csv", [{"event_id": "x", "timestamp": "2026-09-01",
                                            "final_price": "1"}])
    res = run_cli(apply_args(sandbox, tmp_path, sheet), env={"USERMAVEN_TOKEN": SANDBOX_TOKEN})
    assert res.returncode == 2
    assert "final_price" in res.stderr and "Traceback" not in res.stderr


def test_validate_lists_row_numbered_problems_and_exits_2(tmp_path):
    """`validate` is offline: every problem with its row and column, exit 2."""
    res = run_cli(["validate", str(SAMPLE / "corrections.csv")])
    assert res.returncode == 2
    assert "row 19, column 'event_time'" in res.stdout
    assert "row 20, column 'event_type'" in res.stdout
    assert "row 21, column 'merge_mode'" in res.stdout


def test_validate_exits_0_on_a_clean_sheet(tmp_path):
    """A sheet with only valid rows validates with exit 0."""
    sheet = write_csv(tmp_path / "s.csv", [{
        "event_type": "order_completed", "lookup_key": "order_id", "lookup_value": "ORD-1",
        "event_time": "2026-09", "set.final_price": "1"}])
    res = run_cli(["validate", str(sheet)])
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_demo_runs_on_the_embedded_sandbox_and_a_rerun_applies_nothing(tmp_path):
    """`apply --sandbox` needs no token; the second run reports 0 mutations."""
    import shutil

    sheet = tmp_path / "corrections.csv"
    shutil.copy(SAMPLE / "corrections.csv", sheet)
    first = run_cli(["apply", "--sandbox", str(sheet)])
    assert first.returncode == 1, first.stderr
    assert "applied          15" in first.stdout
    second = run_cli(["apply", "--sandbox", str(sheet)])
    assert "0 mutations" in second.stdout and "0 new" in second.stdout
    db = sqlite3.connect(tmp_path / "corrections.checkpoint.sqlite")
    assert db.execute("SELECT COUNT(*) FROM mutations WHERE status = 'applied'").fetchone()[0] == 15
    db.close()


def test_every_command_has_help_with_an_example():
    """Each command's --help shows an example block."""
    for cmd in ("validate", "plan", "apply", "status", "report", "verify", "sandbox"):
        res = run_cli([cmd, "--help"])
        assert res.returncode == 0, cmd
        assert "Example" in res.stdout, cmd
