"""Plans and reverts cover every target: mParticle gets what was reviewed, and the undo too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import read_report, run_cli, write_csv
from test_mparticle import MP_ENV, batch_schema, mp, mp_state  # noqa: F401  (fixtures)
from test_plans import WINDOW, change_through_api, event_of

ROWS = [("ORD-1001", "CUST-00107", "109.99"), ("ORD-1002", "CUST-00043", "54.50")]


def both(sandbox) -> list[str]:
    return ["--api-url", sandbox.url, "--mparticle-url", sandbox.url]


def plan_both(sandbox, tmp_path: Path) -> Path:
    sheet = write_csv(tmp_path / "both.csv", [
        {"order_id": o, "identity.customer_id": c, "set.final_price": p} for o, c, p in ROWS])
    out = tmp_path / "both.plan.json"
    res = run_cli(["plan", str(sheet), *WINDOW, *both(sandbox), "--target", "usermaven",
                   "--target", "mparticle", "--out", str(out)], env=MP_ENV)
    assert res.returncode == 0, res.stderr
    return out


@pytest.mark.usefixtures("mp")  # every batch sent is checked against the schema
def test_a_plan_for_both_targets_delivers_to_both_as_reviewed(sandbox, tmp_path):
    """Items carry their user; `apply --plan` sends to Usermaven and mParticle, once."""
    plan = plan_both(sandbox, tmp_path)
    doc = json.loads(plan.read_text())["plan"]
    assert "mparticle" in doc["api"] and doc["options"]["mparticle"]["mode"] == "event"
    assert [i["user"]["identities"] for i in doc["items"]] == [
        {"customer_id": c} for _, c, _ in ROWS]
    res = run_cli(["apply", "--plan", str(plan), *both(sandbox),
                   "--report", str(tmp_path / "a.csv")], env=MP_ENV)
    assert res.returncode == 0, res.stderr
    lines = read_report(tmp_path / "a.csv")
    assert {(ln["target"], ln["status"]) for ln in lines} == {
        ("usermaven", "applied"), ("mparticle", "accepted")}
    accepted = mp_state(sandbox).accepted
    assert sorted(a["custom_attributes"]["final_price"] for a in accepted) == ["109.99", "54.50"]
    again = run_cli(["apply", "--plan", str(plan), *both(sandbox)], env=MP_ENV)
    assert again.returncode == 0
    assert mp_state(sandbox).stats()["messages_twice"] == []


@pytest.mark.usefixtures("mp")  # every batch sent is checked against the schema
def test_a_drifted_event_is_left_alone_on_every_target(sandbox, tmp_path):
    """When the Usermaven guard fails, the correction is not sent to mParticle either."""
    plan = plan_both(sandbox, tmp_path)
    change_through_api(sandbox, event_of(sandbox, "ORD-1002"), {"final_price": "1.00"}, "other-1")
    res = run_cli(["apply", "--plan", str(plan), *both(sandbox),
                   "--report", str(tmp_path / "a.csv")], env=MP_ENV)
    assert res.returncode == 1
    status = {(ln["target"], ln["lookup_value"]): ln["status"]
              for ln in read_report(tmp_path / "a.csv")}
    assert status[("usermaven", "ORD-1002")] == status[("mparticle", "ORD-1002")] == "drifted"
    assert status[("mparticle", "ORD-1001")] == "accepted"
    assert len(mp_state(sandbox).accepted) == 1


@pytest.mark.usefixtures("mp")  # every batch sent is checked against the schema
def test_reverting_a_run_sends_the_earlier_values_to_mparticle_too(sandbox, tmp_path):
    """The undo restores Usermaven and sends mParticle the attributes with their old values."""
    before = {o: dict(event_of(sandbox, o)["attributes"]) for o, _, _ in ROWS}
    sheet = write_csv(tmp_path / "both.csv", [
        {"order_id": o, "identity.customer_id": c, "set.final_price": p, "set.coupon": "NEW"}
        for o, c, p in ROWS])
    cp = tmp_path / "both.checkpoint.sqlite"
    res = run_cli(["apply", str(sheet), *WINDOW, *both(sandbox), "--target", "usermaven",
                   "--target", "mparticle", "--checkpoint", str(cp)], env=MP_ENV)
    assert res.returncode == 0, res.stderr
    status = run_cli(["status", "--checkpoint", str(cp)])
    run = next(ln.split()[0] for ln in status.stdout.splitlines() if ln.startswith("  run-"))
    out = tmp_path / "undo.plan.json"
    assert run_cli(["revert", "--checkpoint", str(cp), "--run", run, "--out", str(out)]
                   ).returncode == 0
    undone = run_cli(["apply", "--plan", str(out), *both(sandbox),
                      "--report", str(tmp_path / "u.csv")], env=MP_ENV)
    assert undone.returncode == 0, undone.stderr
    assert {o: event_of(sandbox, o)["attributes"] for o, _, _ in ROWS} == before
    restored = [a["custom_attributes"] for a in mp_state(sandbox).accepted[len(ROWS):]]
    assert sorted(r["final_price"] for r in restored) == sorted(
        b["final_price"] for b in before.values())
    assert all(r["coupon"] is None for r in restored)  # it did not exist before


@pytest.mark.usefixtures("mp")  # every batch sent is checked against the schema
def test_a_plan_needs_usermaven_lookups(sandbox, tmp_path):
    """`plan --out` for mParticle alone is refused: nothing names the events to guard."""
    sheet = write_csv(tmp_path / "mp.csv", [{"order_id": "ORD-1001",
                                            "identity.customer_id": "C", "set.x": "1"}])
    res = run_cli(["plan", str(sheet), *WINDOW, "--mparticle-url", sandbox.url, "--target",
                   "mparticle", "--out", str(tmp_path / "p.json")], env=MP_ENV)
    assert res.returncode == 2 and "usermaven" in res.stderr
