"""Cron telemetry: JSON logs a log shipper can read and a metrics file Prometheus can read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, run_cli, write_csv
from prometheus_client.parser import text_string_to_metric_families

from pipeline.sandbox.server import SANDBOX_TOKEN

ENV = {"USERMAVEN_TOKEN": SANDBOX_TOKEN}
LOOKUP = ["--event-type", "order_completed", "--match", "order_id", "--from", "2026-09",
          "--to", "2026-09"]
GOOD = {"order_id": "ORD-1002", "set.final_price": "7.00"}
MISSING = {"order_id": "ORD-0000", "set.final_price": "7.00"}


def cron_run(sandbox, sheet: Path, metrics: Path, *extra: str,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(["apply", str(sheet), "--api-url", sandbox.url, *LOOKUP, "--quiet",
                    "--log-format", "json", "--metrics-file", str(metrics), *extra],
                   env=env or ENV)


def json_lines(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines()]


def metrics_of(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a metrics file, as read by Prometheus' own text parser."""
    out = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_a_quiet_json_run_logs_start_failed_rows_and_summary_with_run_id_on_every_line(
        sandbox, tmp_path):
    """--quiet --log-format json: run_start, the unresolved row at warning, run_end and the
    summary; every line parses and has ts, level, run_id (one run's) and event."""
    sheet = write_csv(tmp_path / "s.csv", [GOOD, MISSING])
    res = cron_run(sandbox, sheet, tmp_path / "m.prom")
    assert res.returncode == 1, res.stderr
    assert res.stdout == ""
    records = json_lines(res.stderr)
    for r in records:
        assert {"ts", "level", "run_id", "event"} <= r.keys(), r
    assert len({r["run_id"] for r in records}) == 1 and records[0]["run_id"].startswith("run-")
    events = [r["event"] for r in records]
    assert {"run_start", "run_end", "summary"} <= set(events)
    [row] = [r for r in records if r["event"] == "row"]  # the successful row is not logged
    assert row["level"] == "warning" and row["status"] == "not_found" and row["row_number"] == 3
    summary = records[events.index("summary")]
    assert summary["counts"] == {"applied": 1, "not_found": 1} and summary["exit_code"] == 1


def test_an_error_that_ends_the_run_is_a_json_line_with_the_same_fields(sandbox, tmp_path):
    """A refused token (exit 3) still leaves parseable lines, the error at level error."""
    sheet = write_csv(tmp_path / "s.csv", [GOOD])
    res = cron_run(sandbox, sheet, tmp_path / "m.prom",
                   env={"USERMAVEN_TOKEN": "wrong-key.wrong-secret"})
    assert res.returncode == 3, res.stderr
    records = json_lines(res.stderr)
    assert all({"ts", "level", "run_id", "event"} <= r.keys() for r in records)
    assert any(r["level"] == "error" for r in records)
    assert "wrong-secret" not in res.stderr


def test_the_metrics_file_is_read_by_the_prometheus_parser(sandbox, tmp_path):
    """Rows by status and target, requests, retries, throttled, duration and exit code."""
    sheet = write_csv(tmp_path / "s.csv", [GOOD, MISSING])
    metrics = tmp_path / "m.prom"
    assert cron_run(sandbox, sheet, metrics).returncode == 1
    m = metrics_of(metrics)
    assert m[("corrections_rows", (("status", "applied"), ("target", "usermaven")))] == 1
    assert m[("corrections_rows", (("status", "not_found"), ("target", "usermaven")))] == 1
    assert m[("corrections_requests", ())] == 3  # two lookups, one mutation
    assert m[("corrections_retries", ())] == 0 and m[("corrections_throttled", ())] == 0
    assert m[("corrections_exit_code", ())] == 1
    assert 0 <= m[("corrections_duration_seconds", ())] < 120
    assert abs(m[("corrections_last_run_timestamp_seconds", ())] - time.time()) < 120
    # this run did not succeed and none did before it: no success time is invented
    assert ("corrections_last_success_timestamp_seconds", ()) not in m
    assert sorted(p.name for p in tmp_path.iterdir() if "prom" in p.name) == ["m.prom"]


def test_the_last_success_time_is_carried_over_by_a_failing_run(sandbox, tmp_path):
    """A run with exit 0 stamps the success time; a later failing run keeps that time."""
    metrics = tmp_path / "m.prom"
    ok = write_csv(tmp_path / "ok.csv", [GOOD])
    assert cron_run(sandbox, ok, metrics).returncode == 0
    first = metrics_of(metrics)
    success = first[("corrections_last_success_timestamp_seconds", ())]
    assert success == first[("corrections_last_run_timestamp_seconds", ())]
    bad = write_csv(tmp_path / "bad.csv", [MISSING])
    assert cron_run(sandbox, bad, metrics).returncode == 1
    second = metrics_of(metrics)
    assert second[("corrections_exit_code", ())] == 1
    assert second[("corrections_last_success_timestamp_seconds", ())] == success
    assert second[("corrections_last_run_timestamp_seconds", ())] >= success


def test_metrics_are_written_when_the_run_ends_on_a_sheet_error(tmp_path):
    """Exit 2 (a broken sheet) still leaves a metrics file saying so."""
    sheet = write_csv(tmp_path / "s.csv", [{"order_id": "ORD-1", "set.price": "1",
                                            "lookup_vale": "x"}])
    metrics = tmp_path / "m.prom"
    res = run_cli(["apply", str(sheet), "--api-url", "http://127.0.0.1:9", *LOOKUP,
                   "--metrics-file", str(metrics)], env=ENV)
    assert res.returncode == 2, res.stderr
    assert metrics_of(metrics)[("corrections_exit_code", ())] == 2


def test_metrics_are_written_after_a_stop_by_sigterm(sandbox, tmp_path):
    """SIGTERM mid-run: a clean stop, exit 143, and a metrics file with that exit code."""
    sandbox.set_faults(latency_ms=300)
    rows = [{"order_id": f"ORD-{1000 + i}", "set.final_price": "3.00"} for i in range(1, 30)]
    sheet = write_csv(tmp_path / "s.csv", rows)
    metrics = tmp_path / "m.prom"
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERMAVEN_")}
    env.update(ENV)
    child = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "apply", str(sheet), "--api-url", sandbox.url,
         *LOOKUP, "--log-format", "json", "--concurrency", "1", "--metrics-file", str(metrics)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stderr is not None
        for line in child.stderr:
            if json.loads(line)["event"] == "run_start":
                break
        time.sleep(0.5)  # let a request or two be on the wire
        child.send_signal(signal.SIGTERM)
        child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 143
    m = metrics_of(metrics)
    assert m[("corrections_exit_code", ())] == 143
    assert m.get(("corrections_rows", (("status", "pending"), ("target", "usermaven"))), 0) > 0
