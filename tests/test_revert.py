"""Undo: `revert` writes the plan that returns a run's events to their earlier state."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, read_report, run_cli, write_csv
from test_plans import ENV, WINDOW, change_through_api, event_of

from pipeline.sandbox.server import SANDBOX_TOKEN

ORDERS = ["ORD-1001", "ORD-1002", "ORD-1004", "ORD-1005"]


def apply_sheet(sandbox, tmp_path: Path, rows: list[dict], name: str = "fix") -> str:
    """Apply `rows` into fix.checkpoint.sqlite; return the run id."""
    sheet = write_csv(tmp_path / f"{name}.csv", rows)
    res = run_cli(["apply", str(sheet), *WINDOW, "--api-url", sandbox.url,
                   "--checkpoint", str(tmp_path / "fix.checkpoint.sqlite"),
                   "--report", str(tmp_path / f"{name}.audit.csv")], env=ENV)
    assert res.returncode == 0, res.stderr
    return runs(tmp_path / "fix.checkpoint.sqlite")[-1]


def runs(checkpoint: Path) -> list[str]:
    with sqlite3.connect(checkpoint) as db:
        return [r[0] for r in db.execute("SELECT run_id FROM runs ORDER BY rowid")]


def revert(tmp_path: Path, *args: str, checkpoint: str = "fix.checkpoint.sqlite",
           out: str = "undo.plan.json") -> subprocess.CompletedProcess[str]:
    return run_cli(["revert", "--checkpoint", str(tmp_path / checkpoint),
                    "--out", str(tmp_path / out), *args], env=ENV)


def apply_plan(sandbox, tmp_path: Path, plan: str = "undo.plan.json", *extra: str,
               checkpoint: str = "undo.checkpoint.sqlite"):
    return run_cli(["apply", "--plan", str(tmp_path / plan), "--api-url", sandbox.url,
                    "--checkpoint", str(tmp_path / checkpoint),
                    "--report", str(tmp_path / f"{plan}.audit.csv"), *extra], env=ENV)


_IDS: dict[str, str] = {}


def states(sandbox, orders=ORDERS) -> dict[str, dict]:
    """Attributes per order, read by event id (a replace may drop the order_id itself)."""
    out = {}
    for o in orders:
        if o not in _IDS:
            _IDS[o] = event_of(sandbox, o)["event_id"]
        out[o] = dict(sandbox.store.get(_IDS[o]).attributes)
    return out


def test_revert_restores_every_event_exactly_once(sandbox, tmp_path):
    """Keys and values come back as they were before the run, also after mixed changes."""
    original = states(sandbox)
    run = apply_sheet(sandbox, tmp_path, [
        {"order_id": "ORD-1001", "set.final_price": "109.99", "set.note": "fixed"},
        {"order_id": "ORD-1002", "event_attributes": '{"final_price": 1}',
         "merge_mode": "replace"},
        {"order_id": "ORD-1001", "set.final_price": "119.99"},  # twice in one run
        {"order_id": "ORD-1004", "set.discount_code": "X"},
    ])
    assert states(sandbox) != original
    res = revert(tmp_path, "--run", run)
    assert res.returncode == 0, res.stderr
    digest = next(ln.split()[1] for ln in res.stdout.splitlines() if ln.startswith("plan "))
    items = json.loads((tmp_path / "undo.plan.json").read_text())["plan"]["items"]
    assert len(items) == 3 and {i["merge_mode"] for i in items} == {"replace"}
    done = apply_plan(sandbox, tmp_path, "undo.plan.json", "--expect-digest", digest)
    assert done.returncode == 0, done.stderr
    assert states(sandbox) == original
    requests = sum(sandbox.stats()["requests"].values())
    again = apply_plan(sandbox, tmp_path)
    assert again.returncode == 0
    assert sum(sandbox.stats()["requests"].values()) == requests
    assert sandbox.stats()["double_applied"] == []


def test_an_event_changed_after_the_run_is_not_reverted_without_force(sandbox, tmp_path):
    """A later edit by someone else wins: `drifted`, untouched; `--force` restores anyway."""
    original = states(sandbox, ["ORD-1001", "ORD-1002"])
    run = apply_sheet(sandbox, tmp_path, [{"order_id": "ORD-1001", "set.final_price": "5.00"},
                                          {"order_id": "ORD-1002", "set.final_price": "6.00"}])
    change_through_api(sandbox, event_of(sandbox, "ORD-1002"), {"final_price": "7.00"}, "x-1")
    assert revert(tmp_path, "--run", run).returncode == 0
    res = apply_plan(sandbox, tmp_path)
    assert res.returncode == 1, res.stderr
    assert event_of(sandbox, "ORD-1001")["attributes"] == original["ORD-1001"]
    assert event_of(sandbox, "ORD-1002")["attributes"]["final_price"] == "7.00"
    status = {ln["event_id"]: ln for ln in read_report(tmp_path / "undo.plan.json.audit.csv")}
    drifted = status[event_of(sandbox, "ORD-1002")["event_id"]]
    assert drifted["status"] == "drifted" and "7.00" in drifted["error"]
    forced = revert(tmp_path, "--run", run, "--force", out="force.plan.json")
    assert forced.returncode == 0
    res = apply_plan(sandbox, tmp_path, "force.plan.json", checkpoint="force.sqlite")
    assert res.returncode == 0, res.stderr
    assert states(sandbox, ["ORD-1001", "ORD-1002"]) == original


def test_event_id_rows_cannot_be_reverted_and_say_why(sandbox, tmp_path):
    """An event sent by id was never read: listed cannot_revert, not silently skipped."""
    ev = event_of(sandbox, "ORD-1001")
    sheet = write_csv(tmp_path / "ids.csv", [{
        "event_id": ev["event_id"], "timestamp": "2026-09-15", "set.final_price": "1.00"}])
    cp = tmp_path / "fix.checkpoint.sqlite"
    res = run_cli(["apply", str(sheet), "--api-url", sandbox.url, "--checkpoint", str(cp)],
                  env=ENV)
    assert res.returncode == 0, res.stderr
    out = revert(tmp_path, "--all")
    assert out.returncode == 0, out.stderr
    assert "cannot_revert" in out.stdout and "never seen" in out.stdout
    plan = json.loads((tmp_path / "undo.plan.json").read_text())["plan"]
    assert plan["items"] == [] and plan["skipped"][0]["event_id"] == ev["event_id"]


def test_a_revert_is_itself_revertible(sandbox, tmp_path):
    """Undoing the undo brings the run's values back."""
    run = apply_sheet(sandbox, tmp_path, [{"order_id": "ORD-1005", "set.final_price": "3.33"}])
    fixed = states(sandbox, ["ORD-1005"])
    assert revert(tmp_path, "--run", run).returncode == 0
    assert apply_plan(sandbox, tmp_path).returncode == 0
    assert states(sandbox, ["ORD-1005"]) != fixed
    undo_run = runs(tmp_path / "undo.checkpoint.sqlite")[-1]
    redo = revert(tmp_path, "--run", undo_run, checkpoint="undo.checkpoint.sqlite",
                  out="redo.plan.json")
    assert redo.returncode == 0, redo.stderr
    res = apply_plan(sandbox, tmp_path, "redo.plan.json", checkpoint="redo.sqlite")
    assert res.returncode == 0, res.stderr
    assert states(sandbox, ["ORD-1005"]) == fixed


def test_revert_of_an_unknown_run_says_which_runs_exist(sandbox, tmp_path):
    """A wrong run id is exit 2 with a pointer to `status`, never an empty plan."""
    apply_sheet(sandbox, tmp_path, [{"order_id": "ORD-1005", "set.final_price": "3.33"}])
    res = revert(tmp_path, "--run", "run-nope")
    assert res.returncode == 2
    assert "run-nope" in res.stderr and "Traceback" not in res.stderr
    assert revert(tmp_path).returncode == 2  # neither --run nor --all


@pytest.mark.timeout(180)
def test_apply_plan_survives_sigkills_and_lands_each_item_once(sandbox, tmp_path):
    """SIGKILL at random instants while a revert plan is applied; reruns end exact, once."""
    orders = [f"ORD-{n}" for n in range(1001, 1041)]
    known = [o for o in orders if _exists(sandbox, o)]
    original = states(sandbox, known)
    run = apply_sheet(sandbox, tmp_path, [{"order_id": o, "set.final_price": "0.01"}
                                          for o in known])
    assert revert(tmp_path, "--run", run).returncode == 0
    applied_by_sheet = sandbox.stats()["mutations"]
    sandbox.set_faults(latency_ms=40, rate_apply_then_cut=0.1, rate_500=0.05, seed=7)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("USERMAVEN_")},
           "USERMAVEN_TOKEN": SANDBOX_TOKEN}
    cmd = [sys.executable, "-m", "pipeline", "apply", "--plan", str(tmp_path / "undo.plan.json"),
           "--api-url", sandbox.url, "--checkpoint", str(tmp_path / "undo.checkpoint.sqlite"),
           "--concurrency", "4", "--backoff-base", "0.01", "--backoff-max", "0.05", "--quiet"]
    for progress in (3, 12, 20):  # kill mid-run, after this many restorations landed
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while (sandbox.stats()["mutations"] - applied_by_sheet < progress
               and proc.poll() is None and time.monotonic() < deadline):
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    sandbox.set_faults(latency_ms=0, rate_apply_then_cut=0, rate_500=0)
    restored = sandbox.stats()["mutations"] - applied_by_sheet
    assert restored >= 20  # the last kill came after 20 restorations had landed
    for _ in range(5):
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=120)
        assert "Traceback" not in done.stderr
        if done.returncode == 0:
            break
    assert done.returncode == 0, done.stderr
    assert states(sandbox, known) == original
    assert sandbox.stats()["double_applied"] == []


def _exists(sandbox, order: str) -> bool:
    return any(e.attributes.get("order_id") == order and not e.is_deleted
               and e.event_type == "order_completed" and e.timestamp.month == 9
               for e in sandbox.store._events.values())


def test_status_lists_runs_with_what_a_revert_would_restore(sandbox, tmp_path):
    """`status` names each run and how many mutations it applied, so one can be reverted."""
    run = apply_sheet(sandbox, tmp_path, [{"order_id": "ORD-1005", "set.final_price": "3.33"},
                                          {"order_id": "ORD-1004", "set.final_price": "4.44"}])
    res = run_cli(["status", "--checkpoint", str(tmp_path / "fix.checkpoint.sqlite")])
    assert res.returncode == 0, res.stderr
    [line] = [ln for ln in res.stdout.splitlines() if ln.startswith(f"  {run}")]
    assert "2 mutation(s) applied" in line and "apply" in line


def test_a_verified_run_can_still_be_reverted_by_its_own_run_id(sandbox, tmp_path):
    """`verify` records its verdict without taking the mutation away from the run that
    applied it, so `revert --run` of that run still restores the event."""
    original = states(sandbox, ["ORD-1005"])
    run = apply_sheet(sandbox, tmp_path, [{"order_id": "ORD-1005", "set.final_price": "3.33"}])
    checked = run_cli(["verify", "--checkpoint", str(tmp_path / "fix.checkpoint.sqlite"),
                       "--api-url", sandbox.url, "--wait", "5"], env=ENV)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert revert(tmp_path, "--run", run).returncode == 0
    assert apply_plan(sandbox, tmp_path).returncode == 0
    assert states(sandbox, ["ORD-1005"]) == original
