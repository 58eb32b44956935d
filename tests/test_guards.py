"""Guards: `expect.<attr>` cells and plan items send a change only where the event still
holds what was expected, compared as JSON values with their types (`pipeline.jsontypes`,
whose properties `tests/test_outcomes_types.py` checks)."""

from __future__ import annotations

from conftest import read_report, run_cli, write_csv
from test_plans import ENV, WINDOW, event_of

from pipeline.guards import Guard


def test_a_whole_state_guard_notices_added_and_dropped_attributes():
    """A plan's guard fails when an attribute appeared or disappeared, and says which."""
    g = Guard({"price": "9.99", "currency": "USD"}, whole=True)
    assert g.drift({"price": "9.99", "currency": "USD"}) is None
    assert "coupon" in (g.drift({"price": "9.99", "currency": "USD", "coupon": "X"}) or "")
    assert "(absent)" in (g.drift({"price": "9.99"}) or "")


def test_expect_guard_applies_only_when_the_value_holds(sandbox, tmp_path):
    """A row whose expect.* holds is applied; one whose expectation fails is `drifted`."""
    a, b = event_of(sandbox, "ORD-1001"), event_of(sandbox, "ORD-1002")
    sheet = write_csv(tmp_path / "g.csv", [
        {"order_id": "ORD-1001", "set.final_price": "1.11",
         "expect.final_price": a["attributes"]["final_price"]},
        {"order_id": "ORD-1002", "set.final_price": "2.22", "expect.final_price": "0.00"},
    ])
    res = run_cli(["apply", str(sheet), *WINDOW, "--api-url", sandbox.url,
                   "--report", str(tmp_path / "g.audit.csv")], env=ENV)
    assert res.returncode == 1, res.stderr
    lines = {ln["lookup_value"]: ln for ln in read_report(tmp_path / "g.audit.csv")}
    assert lines["ORD-1001"]["status"] == "applied"
    assert lines["ORD-1002"]["status"] == "drifted"
    assert "expected \"0.00\"" in lines["ORD-1002"]["error"]
    assert event_of(sandbox, "ORD-1002")["attributes"] == b["attributes"]


def test_expect_guard_compares_types(sandbox, tmp_path):
    """An event holding the number 5 does not satisfy a CSV guard of the text "5"."""
    ev = event_of(sandbox, "ORD-1001")
    assert isinstance(ev["attributes"]["items"], int)
    sheet = write_csv(tmp_path / "t.csv", [
        {"order_id": "ORD-1001", "set.final_price": "1.11",
         "expect.items": str(ev["attributes"]["items"])}])
    res = run_cli(["apply", str(sheet), *WINDOW, "--api-url", sandbox.url,
                   "--report", str(tmp_path / "t.audit.csv")], env=ENV)
    assert res.returncode == 1
    [line] = read_report(tmp_path / "t.audit.csv")
    assert line["status"] == "drifted"
    assert sandbox.stats()["mutations"] == 0


def test_a_guard_on_an_event_id_row_is_an_offline_error(tmp_path):
    """expect.* needs a lookup: on an event_id row it is `invalid`, with row and column."""
    sheet = write_csv(tmp_path / "e.csv", [{
        "event_id": "550e8400-e29b-41d4-a716-446655440000", "timestamp": "2026-09-10",
        "set.final_price": "1", "expect.final_price": "2"}])
    res = run_cli(["validate", str(sheet)])
    assert res.returncode == 2
    assert "row 2, column 'expect.final_price'" in res.stdout
    assert "lookup" in res.stdout


def test_plan_shows_guards_that_already_fail(sandbox, tmp_path):
    """`plan` reports a failing expect.* as `drifted`, with what differs; nothing is sent."""
    sheet = write_csv(tmp_path / "p.csv", [
        {"order_id": "ORD-1001", "set.final_price": "1.11", "expect.final_price": "0.00"}])
    res = run_cli(["plan", str(sheet), *WINDOW, "--api-url", sandbox.url], env=ENV)
    assert "drifted" in res.stdout and "expected \"0.00\"" in res.stdout
    assert sandbox.stats()["mutations"] == 0
