"""The audit trail never forgets: every mutation a checkpoint applied stays in the report."""

from __future__ import annotations

import csv
import json
from collections import Counter

from conftest import SAMPLE, read_report, run_cli, write_csv

from pipeline.sandbox.server import SANDBOX_TOKEN

ENV = {"USERMAVEN_TOKEN": SANDBOX_TOKEN}


def single_orders(n: int) -> list[tuple[str, str]]:
    """`n` (order id, month) pairs, each order held by exactly one live sample event."""
    with open(SAMPLE / "events.csv", encoding="utf-8", newline="") as fh:
        events = [e for e in csv.DictReader(fh) if e["event_type"] == "order_completed"]
    ids = Counter(json.loads(e["event_attributes"]).get("order_id") for e in events)
    out = []
    for e in events:
        order = json.loads(e["event_attributes"]).get("order_id")
        if order and ids[order] == 1 and e["_is_deleted"] == "0":
            out.append((order, e["_timestamp"][:7]))
    return out[:n]


def rows(pairs: list[tuple[str, str]], prices: list[str]) -> list[dict[str, str]]:
    return [{"event_type": "order_completed", "lookup_key": "order_id", "lookup_value": o,
             "event_time": month, "set.final_price": p} for (o, month), p in zip(pairs, prices,
                                                                                strict=True)]


def test_mutations_of_edited_and_deleted_rows_stay_in_the_report(sandbox, tmp_path):
    """Apply 5, change one row and delete another, rerun: the run's report and `corrections
    report` list all 5 earlier mutation_ids plus the new one; the lines whose row left the
    sheet have an empty row_number and say so."""
    pairs = single_orders(5)
    assert len(pairs) == 5
    prices = ["11.11", "22.22", "33.33", "44.44", "55.55"]
    sheet = tmp_path / "s.csv"
    args = ["apply", str(sheet), "--api-url", sandbox.url, "--checkpoint",
            str(tmp_path / "cp.sqlite"), "--report", str(tmp_path / "audit.csv")]
    write_csv(sheet, rows(pairs, prices))
    first = run_cli(args, env=ENV)
    assert first.returncode == 0, first.stderr
    applied = {r["mutation_id"] for r in read_report(tmp_path / "audit.csv")}
    assert len(applied) == 5 and "" not in applied

    edited = rows(pairs, prices)
    edited[1]["set.final_price"] = "99.99"   # a value changed
    del edited[3]                            # a row deleted
    write_csv(sheet, edited)
    second = run_cli(args, env=ENV)
    assert second.returncode == 0, second.stderr

    out = tmp_path / "again.csv"
    again = run_cli(["report", "--checkpoint", str(tmp_path / "cp.sqlite"), "--out", str(out)])
    assert again.returncode == 0, again.stderr
    for report in (tmp_path / "audit.csv", out):
        lines = read_report(report)
        ids = {r["mutation_id"] for r in lines if r["status"] == "applied"}
        assert applied <= ids and len(ids) == 6
        gone = [r for r in lines if r["row_number"] == ""]
        assert len(gone) == 2
        assert {r["lookup_value"] for r in gone} == {pairs[1][0], pairs[3][0]}
        assert all(r["status"] == "applied" and r["mutation_id"] in applied
                   and "no longer in the sheet" in r["error"] for r in gone)
        assert len(lines) == 4 + 2
