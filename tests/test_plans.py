"""Reviewed plans: `plan --out` writes exactly what `apply --plan` sends, sealed by a digest."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from conftest import read_report, run_cli, write_csv

from pipeline.planfile import PlanError
from pipeline.sandbox.server import SANDBOX_TOKEN

ENV = {"USERMAVEN_TOKEN": SANDBOX_TOKEN}
WINDOW = ["--event-type", "order_completed", "--match", "order_id", "--from", "2026-09",
          "--to", "2026-09"]
PRICES = [("ORD-1001", "109.99"), ("ORD-1002", "54.50"), ("ORD-1004", "21.99")]


def event_of(sandbox, order: str) -> dict:
    """The live event carrying order_id `order`, as the sandbox holds it (committed state)."""
    [e] = [e for e in sandbox.store._events.values()
           if e.attributes.get("order_id") == order and not e.is_deleted
           and e.event_type == "order_completed"]
    return {"event_id": e.event_id, "attributes": dict(e.attributes), "timestamp": e.timestamp}


def make_plan(sandbox, tmp_path: Path, rows=PRICES, extra: list[str] | None = None):
    sheet = write_csv(tmp_path / "prices.csv",
                      [{"order_id": o, "set.final_price": p} for o, p in rows])
    out = tmp_path / "prices.plan.json"
    res = run_cli(["plan", str(sheet), *WINDOW, "--api-url", sandbox.url, "--out", str(out),
                   *(extra or [])], env=ENV)
    digest = next(line.split()[1] for line in res.stdout.splitlines()
                  if line.startswith("plan sha256:"))
    return res, out, digest


def apply_plan(sandbox, tmp_path: Path, plan: Path, *extra: str):
    return run_cli(["apply", "--plan", str(plan), "--api-url", sandbox.url,
                    "--checkpoint", str(tmp_path / "plan.checkpoint.sqlite"),
                    "--report", str(tmp_path / "plan.audit.csv"), *extra], env=ENV)


def change_through_api(sandbox, event: dict, attrs: dict, key: str) -> None:
    """Someone else edits the event between review and apply, through the API itself."""
    r = httpx.post(sandbox.url + "/v1/event-mutation", headers={
        "Authorization": f"Bearer {SANDBOX_TOKEN}"}, json={
        "event_id": event["event_id"],
        "timestamp": event["timestamp"].strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "event_attributes": attrs, "merge_mode": "merge", "idempotency_key": key})
    assert r.status_code == 200, r.text


def test_a_tampered_plan_is_refused_and_nothing_is_sent(sandbox, tmp_path):
    """A plan edited after it was written is refused with exit 2 before any request."""
    _, plan, _ = make_plan(sandbox, tmp_path)
    doc = json.loads(plan.read_text())
    doc["plan"]["items"][0]["attributes_after"]["final_price"] = "1099.90"
    plan.write_text(json.dumps(doc))
    before = sandbox.stats()["mutations"]
    res = apply_plan(sandbox, tmp_path, plan)
    assert res.returncode == 2, res.stderr
    assert "modified after it was written" in res.stderr and "Traceback" not in res.stderr
    assert sandbox.stats()["mutations"] == before


def test_a_digest_other_than_the_approved_one_is_refused(sandbox, tmp_path):
    """`--expect-digest` guards an approval: another digest is exit 2 and nothing is sent."""
    _, plan, digest = make_plan(sandbox, tmp_path)
    other = "sha256:" + "0" * 64
    res = apply_plan(sandbox, tmp_path, plan, "--expect-digest", other)
    assert res.returncode == 2
    assert digest in res.stderr and other in res.stderr
    assert sandbox.stats()["mutations"] == 0


def test_apply_plan_lands_exactly_the_planned_items_once(sandbox, tmp_path):
    """The keys the API applies are the plan's keys; a second apply sends nothing."""
    res, plan, digest = make_plan(sandbox, tmp_path)
    assert res.returncode == 0, res.stderr
    items = json.loads(plan.read_text())["plan"]["items"]
    assert len(items) == 3 and all(i["guard"]["whole"] for i in items)
    first = apply_plan(sandbox, tmp_path, plan, "--expect-digest", digest)
    assert first.returncode == 0, first.stderr
    stats = sandbox.stats()
    assert set(stats["applications"]) == {i["idempotency_key"] for i in items}
    assert all(n == 1 for n in stats["applications"].values())
    for order, price in PRICES:
        assert event_of(sandbox, order)["attributes"]["final_price"] == price
    lines = read_report(tmp_path / "plan.audit.csv")
    assert {ln["status"] for ln in lines} == {"applied"}
    assert [ln["idempotency_key"] for ln in lines] == [i["idempotency_key"] for i in items]
    requests = sum(sandbox.stats()["requests"].values())
    again = apply_plan(sandbox, tmp_path, plan, "--expect-digest", digest)
    assert again.returncode == 0
    assert sum(sandbox.stats()["requests"].values()) == requests


def test_an_event_changed_since_the_plan_is_drifted_and_untouched(sandbox, tmp_path):
    """Between review and apply someone edits one event: it is `drifted`, the others land."""
    _, plan, digest = make_plan(sandbox, tmp_path)
    target = event_of(sandbox, "ORD-1002")
    change_through_api(sandbox, target, {"currency": "EUR"}, "someone-else-1")
    res = apply_plan(sandbox, tmp_path, plan, "--expect-digest", digest)
    assert res.returncode == 1, res.stderr
    after = event_of(sandbox, "ORD-1002")["attributes"]
    assert after["final_price"] == target["attributes"]["final_price"]  # untouched
    assert after["currency"] == "EUR"
    lines = {ln["lookup_value"]: ln for ln in read_report(tmp_path / "plan.audit.csv")}
    assert lines["ORD-1002"]["status"] == "drifted"
    assert "currency" in lines["ORD-1002"]["error"] and "EUR" in lines["ORD-1002"]["error"]
    assert lines["ORD-1001"]["status"] == lines["ORD-1004"]["status"] == "applied"
    assert event_of(sandbox, "ORD-1001")["attributes"]["final_price"] == "109.99"


def test_no_refresh_sends_one_request_per_item_without_lookups(sandbox, tmp_path):
    """`--no-refresh` skips the re-read: mutations only, one per item."""
    _, plan, _ = make_plan(sandbox, tmp_path)
    sandbox.reset()
    res = apply_plan(sandbox, tmp_path, plan, "--no-refresh")
    assert res.returncode == 0, res.stderr
    requests = sandbox.stats()["requests"]
    assert requests.get("lookup", 0) == 0
    assert sum(requests.values()) == len(PRICES)


def test_a_plan_for_another_api_is_refused(sandbox, tmp_path):
    """A plan reviewed against one API is not applied to another (exit 2, nothing sent)."""
    _, plan, _ = make_plan(sandbox, tmp_path)
    res = run_cli(["apply", "--plan", str(plan), "--api-url", "http://127.0.0.1:9",
                   "--checkpoint", str(tmp_path / "other.sqlite")], env=ENV)
    assert res.returncode == 2
    assert "was made against" in res.stderr


def test_plan_lists_event_id_rows_as_not_checked(sandbox, tmp_path):
    """Rows sent by event_id were never read: the plan says so instead of guarding them."""
    ev = event_of(sandbox, "ORD-1001")
    sheet = write_csv(tmp_path / "ids.csv", [{
        "event_id": ev["event_id"], "timestamp": "2026-09-15", "set.final_price": "1.00"}])
    out = tmp_path / "ids.plan.json"
    res = run_cli(["plan", str(sheet), "--api-url", sandbox.url, "--out", str(out)], env=ENV)
    assert res.returncode == 0, res.stderr
    [item] = json.loads(out.read_text())["plan"]["items"]
    assert item["guard"] is None and "not checked" in item["note"]
    assert "not checked (no lookup)" in res.stderr


def test_apply_needs_a_sheet_or_a_plan(tmp_path):
    """`apply` with neither a sheet nor --plan is a usage error that says what to give."""
    res = run_cli(["apply"], env=ENV)
    assert res.returncode == 2
    assert "--plan" in res.stderr and "Traceback" not in res.stderr


def test_the_library_saves_applies_and_reverts_a_plan_from_a_running_loop(sandbox, tmp_path):
    """`Corrections.save_plan` → `apply_plan(expect_digest=…)` → `revert` → `apply_plan`
    work from inside an event loop (a notebook) and leave every event as it was."""
    import asyncio

    from pipeline import Corrections, Sheet

    before = {o: dict(event_of(sandbox, o)["attributes"]) for o, _ in PRICES}
    sheet = write_csv(tmp_path / "lib.csv",
                      [{"order_id": o, "set.final_price": p} for o, p in PRICES])
    fixes = Sheet(sheet, event_type="order_completed", match="order_id", start="2026-09",
                  end="2026-09")
    c = Corrections(sandbox.url, SANDBOX_TOKEN)

    async def notebook() -> None:
        saved = c.save_plan(fixes, tmp_path / "lib.plan.json")
        assert saved.items == len(PRICES) and saved.digest.startswith("sha256:")
        with pytest.raises(PlanError):
            c.apply_plan(saved.path, expect_digest="sha256:" + "1" * 64)
        done = await c.apply_plan_async(saved.path, expect_digest=saved.digest)
        assert done.exit_code == 0 and done.counts == {"applied": len(PRICES)}
        undo = c.revert(done.checkpoint, runs=[done.run_id], out=tmp_path / "undo.plan.json")
        assert c.apply_plan(undo).exit_code == 0

    asyncio.run(notebook())
    assert {o: event_of(sandbox, o)["attributes"] for o, _ in PRICES} == before


def test_a_plan_file_is_private_and_never_written_through_a_link(sandbox, tmp_path):
    """The plan (event attributes inside) is 0600; a link planted at its path is refused."""
    import os
    import stat

    _, plan, _ = make_plan(sandbox, tmp_path)
    assert stat.S_IMODE(os.stat(plan).st_mode) == 0o600
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "linked.plan.json"
    link.symlink_to(victim)
    sheet = tmp_path / "prices.csv"
    res = run_cli(["plan", str(sheet), *WINDOW, "--api-url", sandbox.url, "--out", str(link)],
                  env=ENV)
    assert res.returncode == 2 and "symbolic link" in res.stderr
    assert victim.read_text() == "keep me"
