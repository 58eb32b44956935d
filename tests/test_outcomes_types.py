"""Types: the no-op check compares value and JSON type at every depth; Parquet's empty string
means "not given"; `plan` shows type changes and the rows it did not check."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import read_report, run_cli, write_csv
from crafted import crafted_sandbox, eid, event, run_apply, run_plan
from hypothesis import given
from hypothesis import strategies as st

from pipeline.jsontypes import holds, same_json
from pipeline.keys import canonical_json
from pipeline.sandbox.server import SANDBOX_TOKEN


def attrs_row(order: str, attrs: dict[str, Any], mode: str = "merge") -> dict[str, str]:
    return {"event_type": "order_completed", "lookup_key": "order_id", "lookup_value": order,
            "event_time": "2026-03", "event_attributes": json.dumps(attrs), "merge_mode": mode}


@pytest.mark.parametrize("held, asked", [
    (1, True), (True, 1), (0, False), (1, 1.0), (1.0, 1), ("5", 5), (5, "5"), (None, 0),
    ({"a": 1}, {"a": True}), ([1, 2], [1.0, 2]), ({"a": [True]}, {"a": [1]}),
])
@pytest.mark.parametrize("mode", ["merge", "replace"])
def test_a_value_of_another_json_type_is_a_change_not_unchanged(tmp_path, held, asked, mode):
    """An event holding `1` does not hold `true` (nor `1.0`, nor `{"a": true}` for
    `{"a": 1}`): the correction is sent, in merge and in replace mode."""
    before = {"order_id": "ORD-1", "x": held}
    sheet = write_csv(tmp_path / "s.csv", [attrs_row("ORD-1", {"order_id": "ORD-1", "x": asked},
                                                     mode)])
    with crafted_sandbox([event(1, before)]) as sb:
        out = run_apply(sb.url, sheet, tmp_path)
        stored = sb.store.get(eid(1)).attributes["x"]
    assert [r["status"] for r in read_report(out.report)] == ["applied"]
    assert same_json(stored, asked)


@pytest.mark.parametrize("mode", ["merge", "replace"])
def test_a_value_of_the_same_type_and_value_stays_unchanged(tmp_path, mode):
    """Equal value and equal type at every depth: nothing is sent."""
    attrs = {"order_id": "ORD-1", "x": {"a": [True, 1, 1.5, "1"]}}
    sheet = write_csv(tmp_path / "s.csv", [attrs_row("ORD-1", attrs, mode)])
    with crafted_sandbox([event(1, attrs)]) as sb:
        out = run_apply(sb.url, sheet, tmp_path)
        assert sb.stats()["requests"]["mutation"] == 0
    assert [r["status"] for r in read_report(out.report)] == ["unchanged"]


def test_a_parquet_empty_string_means_not_given(tmp_path):
    """An empty Parquet string cell is not sent (as an empty CSV or Excel cell); a row with
    only empty values has nothing to set."""
    table = pa.table({
        "event_type": ["order_completed", "order_completed"],
        "lookup_key": ["order_id", "order_id"], "lookup_value": ["ORD-1", "ORD-2"],
        "event_time": ["2026-03", "2026-03"],
        "set.final_price": ["", ""], "set.coupon": ["AUTUMN", ""],
    })
    sheet = tmp_path / "s.parquet"
    pq.write_table(table, sheet)
    events = [event(1, {"order_id": "ORD-1", "final_price": "9.00"}),
              event(2, {"order_id": "ORD-2", "final_price": "9.00"})]
    with crafted_sandbox(events) as sb:
        out = run_apply(sb.url, sheet, tmp_path)
        assert sb.store.get(eid(1)).attributes == {"order_id": "ORD-1", "final_price": "9.00",
                                                    "coupon": "AUTUMN"}
    lines = read_report(out.report)
    assert [r["status"] for r in lines] == ["applied", "invalid"]
    assert json.loads(lines[0]["attributes_after"]) == {"coupon": "AUTUMN"}


def test_plan_shows_when_a_correction_changes_an_attributes_json_type(tmp_path):
    """`plan` prints and reports `integer → string` when the sheet writes "5" over 5."""
    sheet = write_csv(tmp_path / "s.csv", [
        {"event_type": "order_completed", "lookup_key": "order_id", "lookup_value": "ORD-1",
         "event_time": "2026-03", "set.qty": "5"}])
    report = tmp_path / "plan.csv"
    with crafted_sandbox([event(1, {"order_id": "ORD-1", "qty": 5})]) as sb:
        proc = run_cli(["plan", str(sheet), "--api-url", sb.url, "--report", str(report)],
                       env={"USERMAVEN_TOKEN": SANDBOX_TOKEN}, timeout=60)
        assert sb.stats()["requests"]["mutation"] == 0
    assert proc.returncode == 0, proc.stderr
    assert 'qty: 5 → "5" (type integer → string)' in proc.stdout
    line = read_report(report)[0]
    assert line["status"] == "planned"
    assert "type changes: qty: integer → string" in line["error"]


def test_plan_says_event_id_rows_were_not_checked(tmp_path):
    """An `event_id` row is shown "not checked (no lookup)" in the printed plan and the plan
    report, while a looked-up row is simply planned."""
    sheet = write_csv(tmp_path / "s.csv", [
        {"event_id": eid(1), "timestamp": "2026-03-02", "event_type": "", "lookup_key": "",
         "lookup_value": "", "event_time": "", "set.final_price": "3.00"},
        {"event_id": "", "timestamp": "", "event_type": "order_completed",
         "lookup_key": "order_id", "lookup_value": "ORD-2", "event_time": "2026-03",
         "set.final_price": "3.00"}])
    report = tmp_path / "plan.csv"
    events = [event(1, {"order_id": "ORD-1"}), event(2, {"order_id": "ORD-2"})]
    with crafted_sandbox(events) as sb:
        proc = run_cli(["plan", str(sheet), "--api-url", sb.url, "--report", str(report)],
                       env={"USERMAVEN_TOKEN": SANDBOX_TOKEN}, timeout=60)
        in_process = run_plan(sb.url, sheet, tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = [ln for ln in proc.stdout.splitlines() if ln.startswith("row ")]
    assert "not checked (no lookup)" in printed[0]
    assert "not checked" not in printed[1]
    lines = read_report(report)
    assert "not checked (no lookup)" in lines[0]["error"]
    assert not lines[1]["error"]
    assert "not checked (no lookup)" in read_report(in_process.report)[0]["error"]


# -- properties of the type-strict equality --------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(-10**6, 10**6)
           | st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f + 0.0)
           | st.text(max_size=5))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=12)


@given(json_values)
def test_every_json_value_holds_itself(value):
    """A value is the same JSON as itself, and as its own JSON round trip."""
    assert same_json(value, value)
    assert same_json(value, json.loads(json.dumps(value)))


@given(json_values, json_values)
def test_same_json_means_the_same_json_text(a, b):
    """Two values are the same JSON exactly when their canonical JSON text is equal
    (so `true`, `1` and `1.0` are three different values)."""
    assert same_json(a, b) == (canonical_json(a) == canonical_json(b))


@given(st.dictionaries(st.text(max_size=3), json_values, max_size=4),
       st.dictionaries(st.text(max_size=3), json_values, max_size=4))
def test_holds_is_type_strict_in_both_modes(before, attrs):
    """merge holds when every asked key is present with the same JSON; replace when the whole
    object is the same JSON."""
    assert holds(before, attrs, "merge") == all(
        k in before and canonical_json(before[k]) == canonical_json(v)
        for k, v in attrs.items())
    assert holds(before, attrs, "replace") == (canonical_json(before) == canonical_json(attrs))
