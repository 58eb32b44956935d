"""`verify` finds each applied event by its exact time and any attribute of its expected state."""

from __future__ import annotations

import json

from conftest import read_report, run_cli, write_csv
from crafted import crafted_sandbox, eid, event, order_row, run_apply

from pipeline.sandbox.server import SANDBOX_TOKEN
from pipeline.targets.usermaven.verify import verify

ENV = {"USERMAVEN_TOKEN": SANDBOX_TOKEN}


def _verify_cli(url: str, cp, *extra: str):
    return run_cli(["verify", "--checkpoint", str(cp), "--api-url", url, *extra], env=ENV,
                   timeout=90)


def test_a_replace_that_dropped_the_lookup_attribute_is_verified(tmp_path):
    """An event whose `replace` removed the attribute it was found by is still found (by its
    second and a value it now holds) and verified."""
    sheet = write_csv(tmp_path / "s.csv", [{
        "event_type": "order_completed", "lookup_key": "order_id", "lookup_value": "ORD-1",
        "event_time": "2026-03", "merge_mode": "replace",
        "event_attributes": json.dumps({"final_price": "2.00", "state": "fixed"})}])
    with crafted_sandbox([event(1, {"order_id": "ORD-1", "final_price": "1.00"})]) as sb:
        out = run_apply(sb.url, sheet, tmp_path)
        assert out.exit_code == 0
        assert "order_id" not in sb.store.get(eid(1)).attributes
        result = verify(tmp_path / "cp.sqlite", sb.url, SANDBOX_TOKEN, wait=0)
    assert (result.verified, result.mismatch, result.pending) == (1, 0, 0)
    assert result.exit_code == 0


def test_an_event_behind_ten_newer_events_with_the_same_value_is_verified(tmp_path):
    """The live event `newest` chose behind ten newer deleted ones with the same order id is
    found by its exact second and verified."""
    events = [event(i, {"order_id": "ORD-1"}, minutes_ago=i, deleted=True) for i in range(1, 11)]
    events.append(event(50, {"order_id": "ORD-1", "final_price": "1.00"}, minutes_ago=900))
    sheet = write_csv(tmp_path / "s.csv", [order_row("ORD-1", "6.00")])
    with crafted_sandbox(events) as sb:
        assert run_apply(sb.url, sheet, tmp_path, on_multiple="newest").exit_code == 0
        result = verify(tmp_path / "cp.sqlite", sb.url, SANDBOX_TOKEN, wait=0)
    assert (result.verified, result.mismatch, result.pending) == (1, 0, 0)


def test_an_event_id_row_behind_ten_newer_events_with_the_written_value_is_verified(tmp_path):
    """Without an exact time (an `event_id` row), the month is split while pages are full, so
    ten newer events already holding the written value do not hide the event."""
    events = [event(i, {"coupon": "SPRING"}, minutes_ago=i) for i in range(1, 12)]
    events.append(event(50, {"coupon": "none"}, minutes_ago=3000))
    sheet = write_csv(tmp_path / "s.csv", [{"event_id": eid(50), "timestamp": "2026-03-01",
                                            "event_type": "order_completed",
                                            "set.coupon": "SPRING"}])
    with crafted_sandbox(events) as sb:
        assert run_apply(sb.url, sheet, tmp_path).exit_code == 0
        result = verify(tmp_path / "cp.sqlite", sb.url, SANDBOX_TOKEN, wait=0)
    assert (result.verified, result.mismatch, result.pending) == (1, 0, 0)


def test_values_not_yet_propagated_are_pending_not_mismatch(tmp_path):
    """An event still showing its old values is `pending` (not visible yet), never `mismatch`;
    once the values propagate within --wait it is verified."""
    sheet = write_csv(tmp_path / "s.csv", [order_row("ORD-1", "6.00")])
    cp = tmp_path / "cp.sqlite"
    with crafted_sandbox([event(1, {"order_id": "ORD-1", "final_price": "1.00"})]) as sb:
        sb.store.propagation_delay = 8.0
        assert run_apply(sb.url, sheet, tmp_path).exit_code == 0
        early = _verify_cli(sb.url, cp, "--wait", "0", "--report", str(tmp_path / "v1.csv"))
        later = _verify_cli(sb.url, cp, "--wait", "30", "--report", str(tmp_path / "v2.csv"))
    assert early.returncode == 1, early.stdout + early.stderr
    assert "mismatch 0" in early.stdout and "not visible 1" in early.stdout
    assert "not propagated" in early.stdout
    assert read_report(tmp_path / "v1.csv")[0]["status"] == "applied"
    assert later.returncode == 0, later.stdout + later.stderr
    assert read_report(tmp_path / "v2.csv")[0]["status"] == "verified"


def test_rows_without_an_event_type_say_they_cannot_be_verified_and_do_not_fail(tmp_path):
    """An `event_id` row with no event type cannot be looked up: verify says so and still exits
    0 when everything it could check is verified."""
    sheet = write_csv(tmp_path / "s.csv", [
        {"event_id": eid(1), "timestamp": "2026-03-02", "event_type": "", "lookup_key": "",
         "lookup_value": "", "event_time": "", "set.final_price": "3.00"},
        {"event_id": "", "timestamp": "", "event_type": "order_completed",
         "lookup_key": "order_id", "lookup_value": "ORD-2", "event_time": "2026-03",
         "set.final_price": "4.00"}])
    cp = tmp_path / "cp.sqlite"
    events = [event(1, {"order_id": "ORD-1"}), event(2, {"order_id": "ORD-2"})]
    with crafted_sandbox(events) as sb:
        assert run_apply(sb.url, sheet, tmp_path).exit_code == 0
        res = _verify_cli(sb.url, cp, "--wait", "0")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verified 1" in res.stdout and "cannot verify 1" in res.stdout
    assert "no event_type" in res.stdout
