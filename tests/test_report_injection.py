"""The CSV report never hands a spreadsheet a formula or an extra row, whatever the sheet held."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from conftest import read_report, run_cli

from pipeline.report import write_report
from pipeline.sandbox.server import SANDBOX_TOKEN

ENV = {"USERMAVEN_TOKEN": SANDBOX_TOKEN}
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
HOSTILE = [
    # (event_type, lookup_value, merge_mode, idempotency_key, set.note)
    ("order_completed", "ORD-9\r=10*10", "", "", "x"),
    ("order_completed", "ORD-8\n+HYPERLINK(\"http://x\")", "", "", "x"),
    ("order_completed", "ORD-1001", "=cmd|' /C calc'!A0", "", "x"),
    ("order_completed", "ORD-1002", "\r@SUM(1)", "", "x"),
    ("-2+3", "ORD-7", "", "", "x"),
    ("order_completed", "@ORD-6", "", "=1+1\r=2+2", "\t=3"),
    ("order_completed", "ORD-5\r\n-4", "merge", "", "\r=4"),
]


def hostile_sheet(path: Path) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        w.writerow(["event_type", "lookup_key", "lookup_value", "event_time", "merge_mode",
                    "idempotency_key", "set.note"])
        for event_type, value, mode, key, note in HOSTILE:
            w.writerow([event_type, "order_id", value, "2026-09", mode, key, note])
    return path


def assert_no_formula(path: Path, lines: int) -> None:
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert len(rows) == lines + 1  # the header
    for row in rows:
        for cell in row:
            assert not cell.startswith(FORMULA_START), cell
    text = path.read_text(encoding="utf-8", errors="replace")
    for physical in re.split(r"\r\n|\r|\n", text):
        # a spreadsheet that splits on any line break still sees no cell starting a formula
        for cell in physical.split(","):
            assert not cell.lstrip('"').startswith(FORMULA_START), physical


def test_a_hostile_sheet_gives_a_report_without_formulas_or_extra_rows(sandbox, tmp_path):
    """Line breaks and formula starts in any column: one report line per row, none a formula."""
    sheet = hostile_sheet(tmp_path / "fixes.csv")
    res = run_cli(["apply", str(sheet), "--api-url", sandbox.url, "--checkpoint",
                   str(tmp_path / "cp.sqlite"), "--report", str(tmp_path / "audit.csv")],
                  env=ENV)
    assert res.returncode == 1, res.stderr
    assert_no_formula(tmp_path / "audit.csv", len(HOSTILE))
    lines = read_report(tmp_path / "audit.csv")
    assert lines[0]["lookup_value"] == "ORD-9\r'=10*10"
    assert lines[2]["merge_mode"] == "'=cmd|' /C calc'!A0"
    again = run_cli(["report", "--checkpoint", str(tmp_path / "cp.sqlite"), "--out",
                     str(tmp_path / "again.csv")])
    assert again.returncode == 0, again.stderr
    assert_no_formula(tmp_path / "again.csv", len(HOSTILE))


@pytest.mark.parametrize("column", ["event_type", "lookup_value", "merge_mode", "error",
                                    "timestamp", "attributes_after", "run_id", "status"])
def test_every_report_column_is_neutralised(tmp_path, column):
    """Whatever column a hostile value reaches, the CSV writer quotes and neutralises it."""
    path = tmp_path / "audit.csv"
    write_report([{"row_number": 2, column: "x\r=1+1"}, {"row_number": 3, column: "-1"}], path)
    assert_no_formula(path, 2)
    assert [r[column] for r in read_report(path)] == ["x\r'=1+1", "'-1"]


def test_a_negative_number_from_a_typed_sheet_is_neutralised_too(sandbox, tmp_path):
    """A Parquet lookup value -5 (a number, not text) is written as text that is not a formula."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sheet = tmp_path / "fixes.parquet"
    pq.write_table(pa.table({"event_type": ["order_completed"], "lookup_key": ["items"],
                             "lookup_value": pa.array([-5], pa.int64()),
                             "event_time": ["2026-09"], "set.note": ["x"]}), sheet)
    res = run_cli(["apply", str(sheet), "--api-url", sandbox.url, "--checkpoint",
                   str(tmp_path / "cp.sqlite"), "--report", str(tmp_path / "audit.csv")],
                  env=ENV)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert_no_formula(tmp_path / "audit.csv", 1)
    assert read_report(tmp_path / "audit.csv")[0]["lookup_value"] == "'-5"
