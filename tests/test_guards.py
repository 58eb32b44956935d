"""Guards: `expect.<attr>` cells and plan items send a change only where the event still
holds what was expected, compared as JSON values with their types."""

from __future__ import annotations

from conftest import read_report, run_cli, write_csv
from hypothesis import given
from hypothesis import strategies as st
from test_plans import ENV, WINDOW, event_of

from pipeline.guards import Guard, same_json

json_values = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False).map(lambda f: f + 0.0) | st.text(),  # no -0.0
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10)


@given(json_values)
def test_every_json_value_equals_itself(value):
    """Equality is reflexive for any JSON value."""
    assert same_json(value, value)


@given(json_values, json_values)
def test_equal_values_have_the_same_canonical_json(a, b):
    """Two values are equal exactly when their JSON texts (types included) agree."""
    import json

    def text(v):
        return json.dumps(v, sort_keys=True)

    assert same_json(a, b) == (text(a) == text(b) and _types(a) == _types(b))


def _types(v):
    if isinstance(v, dict):
        return {k: _types(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_types(x) for x in v]
    return type(v).__name__


def test_true_is_not_one_and_one_is_not_one_point_zero():
    """`true` ≠ `1` ≠ `1.0` ≠ `"1"`, also nested."""
    assert not same_json(True, 1)
    assert not same_json(1, 1.0)
    assert not same_json(1, "1")
    assert not same_json({"a": [1]}, {"a": [True]})
    assert same_json({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]})


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
