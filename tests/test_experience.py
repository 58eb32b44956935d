"""What a person or a cron job sees: progress on a terminal, JSON logs, config precedence."""

from __future__ import annotations

import json
import os
import sys

import pexpect
import pytest
from conftest import REPO, SAMPLE, read_report, run_cli, write_csv

from pipeline.sandbox.server import SANDBOX_TOKEN

ENV = {"USERMAVEN_TOKEN": SANDBOX_TOKEN}


def one_row_sheet(tmp_path, price: str = "9.00"):
    return write_csv(tmp_path / "s.csv", [{
        "event_type": "order_completed", "lookup_key": "order_id", "lookup_value": "ORD-1002",
        "event_time": "2026-09", "set.final_price": price}])


def test_a_terminal_gets_a_live_progress_display(sandbox, tmp_path):
    """In a real pseudo-terminal, apply draws rows done/total, rate and ETA on stderr."""
    sandbox.set_faults(latency_ms=40)
    env = {**os.environ, **ENV, "COLUMNS": "160"}
    child = pexpect.spawn(sys.executable, ["-m", "pipeline", "apply",
                                           str(SAMPLE / "corrections.csv"), "--api-url",
                                           sandbox.url, "--checkpoint",
                                           str(tmp_path / "cp.sqlite"), "--concurrency", "2"],
                          cwd=str(REPO), env=env, encoding="utf-8", timeout=60)
    child.expect("rows")
    child.expect("ETA")
    child.expect(r"\d+/26")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert "applied" in child.before


def test_ctrl_c_in_a_terminal_stops_cleanly(sandbox, tmp_path):
    """Ctrl-C (SIGINT from the terminal) stops the run with exit 130 and a report."""
    sandbox.set_faults(latency_ms=300)
    env = {**os.environ, **ENV}
    child = pexpect.spawn(sys.executable, ["-m", "pipeline", "apply",
                                           str(SAMPLE / "corrections.csv"), "--api-url",
                                           sandbox.url, "--checkpoint",
                                           str(tmp_path / "cp.sqlite"), "--report",
                                           str(tmp_path / "r.csv"), "--concurrency", "2"],
                          cwd=str(REPO), env=env, encoding="utf-8", timeout=60)
    child.expect(r"[1-9]\d*/26")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert len(read_report(tmp_path / "r.csv")) == 26


def test_without_a_terminal_nothing_is_animated(sandbox, tmp_path):
    """Piped stderr (cron) carries plain lines: no carriage returns, no escape codes."""
    res = run_cli(["apply", str(SAMPLE / "corrections.csv"), "--api-url", sandbox.url,
                   "--checkpoint", str(tmp_path / "cp.sqlite")], env=ENV)
    assert res.returncode == 1
    assert "\r" not in res.stderr and "\x1b[" not in res.stderr


def test_json_logs_are_one_parseable_object_per_line_for_a_cron_run(sandbox, tmp_path):
    """--log-format json: run start (no secrets), each row's status, retries, the summary."""
    sandbox.set_faults(rate_500=0.3, seed=11)
    res = run_cli(["apply", str(SAMPLE / "corrections.csv"), "--api-url", sandbox.url,
                   "--checkpoint", str(tmp_path / "cp.sqlite"), "--log-format", "json",
                   "--backoff-base", "0.001", "--max-attempts", "8"], env=ENV)
    assert res.returncode == 1
    records = [json.loads(line) for line in res.stderr.splitlines()]
    events = [r.get("event") for r in records]
    first = events.index("run_start")  # after the announcements: config file, API host
    assert set(events[:first]) <= {"config", "api"} and events[-1] == "summary"
    assert "retry" in events
    assert sum(e == "row" for e in events) == 25
    start = records[first]
    assert start["options"]["concurrency"] == 8
    assert SANDBOX_TOKEN.split(".")[1] not in res.stderr
    assert records[-1]["exit_code"] == 1 and records[-1]["counts"]["applied"] == 15


def test_config_file_sets_options_and_the_command_line_wins(sandbox, tmp_path):
    """corrections.toml in the working directory < env < command line."""
    sheet = one_row_sheet(tmp_path)
    (tmp_path / "corrections.toml").write_text(
        '[corrections]\napi-url = "http://127.0.0.1:1"\nconcurrency = 3\n'
        f'report = "{tmp_path / "from-config.csv"}"\n', encoding="utf-8")
    # the file's api-url is wrong; the environment's wins over it
    res = run_cli(["apply", str(sheet), "--log-format", "json"],
                  env={**ENV, "USERMAVEN_API_URL": sandbox.url}, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    start = run_start(res.stderr)
    assert start["options"]["concurrency"] == 3
    assert (tmp_path / "from-config.csv").exists()
    # and the command line wins over both
    res = run_cli(["apply", str(sheet), "--log-format", "json", "--concurrency", "5",
                   "--api-url", sandbox.url], env={**ENV, "USERMAVEN_API_URL": "http://x:1"},
                  cwd=tmp_path)
    assert run_start(res.stderr)["options"]["concurrency"] == 5


def run_start(stderr: str) -> dict:
    """The run_start line of a JSON log (announcements of config and API host precede it)."""
    return next(r for r in map(json.loads, stderr.splitlines()) if r["event"] == "run_start")


def test_an_explicit_config_file_is_read_and_a_bad_one_is_a_usage_error(sandbox, tmp_path):
    """--config PATH is honoured; invalid TOML is exit 2 with the file named."""
    sheet = one_row_sheet(tmp_path)
    cfg = tmp_path / "nightly.toml"
    cfg.write_text(f'api-url = "{sandbox.url}"\nmax-attempts = 2\n', encoding="utf-8")
    assert run_cli(["apply", str(sheet), "--config", str(cfg)], env=ENV).returncode == 0
    cfg.write_text("this is = not [toml", encoding="utf-8")
    res = run_cli(["apply", str(sheet), "--config", str(cfg)], env=ENV)
    assert res.returncode == 2 and "not valid TOML" in res.stderr


@pytest.mark.parametrize(("line", "says"), [
    ('token = "k.s-do-not-print"', "does not belong in the config file"),
    ('mparticle-api-secret = "shh-do-not-print"', "MPARTICLE_API_SECRET"),
])
def test_a_secret_in_the_config_file_is_refused(tmp_path, line, says):
    """Tokens and mParticle credentials come from the environment only: exit 2, not echoed."""
    sheet = one_row_sheet(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(line + "\n", encoding="utf-8")
    res = run_cli(["apply", str(sheet), "--config", str(cfg)], env=ENV)
    assert res.returncode == 2 and says in res.stderr
    assert "do-not-print" not in res.stderr
