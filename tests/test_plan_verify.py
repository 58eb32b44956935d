"""`plan`, `verify`, `status` and `report`: seeing before, confirming after, reading back."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from conftest import SAMPLE, read_report, run_cli, write_csv

from pipeline.sandbox.server import SANDBOX_TOKEN

ENV = {"USERMAVEN_TOKEN": SANDBOX_TOKEN}


def test_plan_shows_true_before_and_after_and_sends_no_mutation(sandbox, tmp_path):
    """`plan` looks events up and prints old → new, without a single mutation request."""
    res = run_cli(["plan", str(SAMPLE / "corrections.csv"), "--api-url", sandbox.url,
                   "--report", str(tmp_path / "plan.csv")], env=ENV)
    assert res.returncode == 1, res.stderr  # the sample has invalid/unresolved rows
    assert 'final_price: "99.99" → "109.99"' in res.stdout
    assert 'final_price: "149.99" (already)' in res.stdout
    stats = sandbox.stats()
    assert stats["requests"]["mutation"] == 0 and stats["mutations"] == 0
    lines = read_report(tmp_path / "plan.csv")
    by_row = {int(r["row_number"]): r["status"] for r in lines}
    assert by_row[2] == "planned" and by_row[17] == "unchanged" and by_row[25] == "ambiguous"
    assert json.loads(lines[0]["attributes_before"])["final_price"] == "99.99"


def test_plan_leaves_no_checkpoint_behind(sandbox, tmp_path):
    """`plan` works in a throwaway checkpoint: a later apply starts from scratch."""
    sheet = write_csv(tmp_path / "s.csv", [{
        "event_type": "order_completed", "lookup_key": "order_id", "lookup_value": "ORD-1002",
        "event_time": "2026-09", "set.final_price": "9.00"}])
    res = run_cli(["plan", str(sheet), "--api-url", sandbox.url], env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not (tmp_path / "s.checkpoint.sqlite").exists()
    assert (tmp_path / "s.plan.csv").exists()


def test_verify_after_apply_reports_every_checkable_event_verified(sandbox, tmp_path):
    """With a propagation delay, verify waits and then records `verified`."""
    sandbox.store.propagation_delay = 1.5
    cp = tmp_path / "cp.sqlite"
    res = run_cli(["apply", str(SAMPLE / "corrections.csv"), "--api-url", sandbox.url,
                   "--checkpoint", str(cp), "--report", str(tmp_path / "a.csv")], env=ENV)
    assert res.returncode == 1
    res = run_cli(["verify", "--checkpoint", str(cp), "--api-url", sandbox.url, "--wait", "10",
                   "--report", str(tmp_path / "v.csv")], env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verified 14" in res.stdout and "cannot verify 1" in res.stdout
    lines = read_report(tmp_path / "v.csv")
    assert sum(r["status"] == "verified" for r in lines) == 14
    assert all(r["mutation_id"] for r in lines if r["status"] == "verified")


def test_verify_reports_a_value_changed_behind_our_back_as_mismatch(sandbox, tmp_path):
    """If the event no longer holds the values, verify says mismatch and exits 1."""
    sheet = write_csv(tmp_path / "s.csv", [{
        "event_type": "order_completed", "lookup_key": "order_id", "lookup_value": "ORD-1002",
        "event_time": "2026-09", "set.final_price": "9.00"}])
    cp = tmp_path / "cp.sqlite"
    assert run_cli(["apply", str(sheet), "--api-url", sandbox.url, "--checkpoint", str(cp)],
                   env=ENV).returncode == 0
    sandbox.store.mutate("407dfe54-d8e9-4aa1-9744-d89e5f6107b0",
                         sandbox.store.get("407dfe54-d8e9-4aa1-9744-d89e5f6107b0").timestamp,
                         {"final_price": "7.00"}, "merge", "someone-else")
    res = run_cli(["verify", "--checkpoint", str(cp), "--api-url", sandbox.url, "--wait", "0"],
                  env=ENV)
    assert res.returncode == 1
    assert "mismatch 1" in res.stdout and "7.00" in res.stdout


def test_status_counts_rows_and_says_what_is_left(sandbox, tmp_path):
    """`status` reads the checkpoint offline: counts by status and rows left to do."""
    cp = tmp_path / "cp.sqlite"
    run_cli(["apply", str(SAMPLE / "corrections.csv"), "--api-url", sandbox.url,
             "--checkpoint", str(cp)], env=ENV)
    res = run_cli(["status", "--checkpoint", str(cp)])
    assert res.returncode == 0, res.stderr
    assert "applied" in res.stdout and "not done:   9 row(s)" in res.stdout
    assert "a rerun retries 0" in res.stdout and "4 more with --retry-unresolved" in res.stdout
    info = json.loads(run_cli(["status", "--checkpoint", str(cp), "--json"]).stdout)
    assert info["counts"]["applied"] == 15 and info["last_run"]["exit_code"] == 1


def test_report_reemits_the_audit_in_each_format(sandbox, tmp_path):
    """`report --out` writes csv, parquet and jsonl with the same lines."""
    cp = tmp_path / "cp.sqlite"
    run_cli(["apply", str(SAMPLE / "corrections.csv"), "--api-url", sandbox.url,
             "--checkpoint", str(cp)], env=ENV)
    for name in ("r.csv", "r.parquet", "r.jsonl"):
        res = run_cli(["report", "--checkpoint", str(cp), "--out", str(tmp_path / name)])
        assert res.returncode == 0, res.stderr
    assert len(read_report(tmp_path / "r.csv")) == 26
    assert pq.read_table(tmp_path / "r.parquet").num_rows == 26
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 26


def test_status_of_a_missing_checkpoint_is_a_clear_error(tmp_path):
    """No checkpoint file: exit 2 and a hint, not a traceback."""
    res = run_cli(["status", "--checkpoint", str(tmp_path / "nope.sqlite")])
    assert res.returncode == 2
    assert "no checkpoint" in res.stderr and "Traceback" not in res.stderr
