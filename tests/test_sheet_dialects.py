"""Sheets as people have them: typed Excel cells, `;` and decimal commas, other encodings,
typos in columns and config keys, and a config file that is announced and checked."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import openpyxl
from conftest import read_report, run_cli, write_csv

from pipeline.jobs import SheetJob
from pipeline.model import Correction, SheetDefaults
from pipeline.readers.dialect import Dialect
from pipeline.sandbox.server import SANDBOX_TOKEN

ENV = {"USERMAVEN_TOKEN": SANDBOX_TOKEN}
LOOKUP = ["--event-type", "order_completed", "--match", "order_id", "--from", "2026-09",
          "--to", "2026-09"]
EID = "407dfe54-d8e9-4aa1-9744-d89e5f6107b0"  # ORD-1002 in the sample events


def corrections_of(job: SheetJob) -> list[Correction]:
    out = [item for batch in job.batches() for item in batch]
    assert all(isinstance(c, Correction) for c in out), out
    return out  # type: ignore[return-value]


def excel(tmp_path: Path, rows: list[list], formats: dict[str, str] | None = None) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    for row in rows:
        ws.append(row)
    for cell, fmt in (formats or {}).items():
        ws[cell].number_format = fmt
    path = tmp_path / "fixes.xlsx"
    wb.save(path)
    wb.close()
    return path


def test_excel_cells_keep_their_type_like_parquet(tmp_path):
    """Numbers stay JSON numbers (whole ones without .0), booleans booleans, dates ISO text;
    a text-formatted `00123` stays text, while a number shown as `149.90` is the number."""
    path = excel(tmp_path, [
        ["event_id", "timestamp", "set.n", "set.price", "set.ok", "set.day", "set.code"],
        [EID, dt.datetime(2026, 9, 5, 16, 50), 5, 149.9, True, dt.date(2026, 9, 1), "00123"],
    ], {"D2": "0.00"})
    [c] = corrections_of(SheetJob(path))
    assert dict(c.attributes) == {"n": 5, "price": 149.9, "ok": True, "day": "2026-09-01",
                                  "code": "00123"}
    assert type(c.attributes["n"]) is int


def test_an_excel_number_is_sent_as_a_json_number(sandbox, tmp_path):
    """End to end, an Excel number cell reaches the API as a number, not as text."""
    path = excel(tmp_path, [["order_id", "set.final_price", "set.items"], ["ORD-1002", 54.5, 4]])
    res = run_cli(["apply", str(path), "--api-url", sandbox.url, *LOOKUP], env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    [line] = read_report(tmp_path / "fixes.audit.csv")
    assert json.loads(line["attributes_after"]) == {"final_price": 54.5, "items": 4}


def test_plan_of_an_excel_sheet_says_numbers_are_sent_as_the_cells_hold_them(sandbox, tmp_path):
    """`plan` of an .xlsx shows the number sent (54.5, not "54.50") and says how to keep text."""
    path = excel(tmp_path, [["order_id", "set.final_price"], ["ORD-1002", 54.5]], {"B2": "0.00"})
    res = run_cli(["plan", str(path), "--api-url", sandbox.url, *LOOKUP], env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "→ 54.5" in res.stdout and "format a column as Text" in res.stdout


def test_a_semicolon_sheet_read_with_commas_says_to_pass_the_delimiter(tmp_path):
    """A `;` export read as comma-separated: exit 2, naming --delimiter ';'."""
    sheet = tmp_path / "eu.csv"
    sheet.write_text("order_id;set.final_price\nORD-1002;149,90\n", encoding="utf-8")
    res = run_cli(["validate", str(sheet), *LOOKUP])
    assert res.returncode == 2, res.stdout + res.stderr
    assert "--delimiter ';'" in res.stderr and "Traceback" not in res.stderr


def test_a_semicolon_sheet_with_decimal_commas_plans_and_applies_numbers(sandbox, tmp_path):
    """`--delimiter ';' --decimal-comma`: `149,90` is planned and sent as the number 149.9."""
    sheet = tmp_path / "eu.csv"
    sheet.write_bytes("order_id;set.final_price;set.note\nORD-1002;149,90;a,b\n"
                      .encode("utf-8-sig"))
    args = [str(sheet), "--api-url", sandbox.url, *LOOKUP, "--delimiter", ";",
            "--decimal-comma"]
    plan = run_cli(["plan", *args], env=ENV)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "→ 149.9" in plan.stdout and "--decimal-comma" in plan.stdout
    res = run_cli(["apply", *args], env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    [line] = read_report(tmp_path / "eu.audit.csv")
    assert json.loads(line["attributes_after"]) == {"final_price": 149.9, "note": "a,b"}


def test_decimal_commas_touch_only_set_values_that_are_numbers(tmp_path):
    """Lookup values and non-numeric text keep their commas; `1.234,5` is 1234.5."""
    sheet = write_csv(tmp_path / "s.csv", [
        {"order_id": "A,1", "set.a": "1.234,5", "set.b": "1,2,3", "set.c": "-0,5",
         "set.d": "12"}])
    job = SheetJob(sheet, SheetDefaults(event_type="order_completed", match="order_id",
                                        from_=dt.datetime(2026, 9, 1, tzinfo=dt.UTC),
                                        to=dt.datetime(2026, 9, 30, tzinfo=dt.UTC)),
                   dialect=Dialect.of(decimal_comma=True))
    [c] = corrections_of(job)
    assert c.lookup_value == "A,1"
    assert dict(c.attributes) == {"a": 1234.5, "b": "1,2,3", "c": -0.5, "d": "12"}


def test_a_decimal_comma_without_the_flag_is_sent_as_text_with_a_warning(sandbox, tmp_path):
    """Without --decimal-comma `149,90` stays text, and the run warns once how to change it."""
    sheet = write_csv(tmp_path / "s.csv", [{"order_id": "ORD-1002", "set.final_price": "149,90"},
                                           {"order_id": "ORD-1001", "set.final_price": "1,5"}])
    res = run_cli(["apply", str(sheet), "--api-url", sandbox.url, *LOOKUP], env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stderr.count("--decimal-comma") == 1
    assert "row 2, set.final_price" in res.stderr
    lines = read_report(tmp_path / "s.audit.csv")
    assert json.loads(lines[0]["attributes_after"]) == {"final_price": "149,90"}


def test_a_sheet_in_another_encoding_is_read_with_encoding(tmp_path):
    """A cp1252 export: --encoding cp1252 reads `Café`; without it the row is invalid."""
    sheet = tmp_path / "w.csv"
    sheet.write_bytes("order_id,set.city\nORD-1002,Café\n".encode("cp1252"))
    job = SheetJob(sheet, SheetDefaults(event_type="order_completed", match="order_id",
                                        from_=dt.datetime(2026, 9, 1, tzinfo=dt.UTC),
                                        to=dt.datetime(2026, 9, 30, tzinfo=dt.UTC)),
                   dialect=Dialect.of(encoding="cp1252"))
    [c] = corrections_of(job)
    assert c.attributes == {"city": "Café"}
    res = run_cli(["validate", str(sheet), *LOOKUP])
    assert res.returncode == 2 and "UTF-8" in res.stdout + res.stderr


def test_an_unknown_encoding_or_a_long_delimiter_is_a_usage_error(tmp_path):
    """`--encoding nope` and `--delimiter ';;'` are refused with exit 2 before reading."""
    sheet = write_csv(tmp_path / "s.csv", [{"order_id": "ORD-1002", "set.final_price": "1"}])
    bad_enc = run_cli(["validate", str(sheet), *LOOKUP, "--encoding", "nope"])
    assert bad_enc.returncode == 2 and "unknown text encoding 'nope'" in bad_enc.stderr
    bad_sep = run_cli(["validate", str(sheet), *LOOKUP, "--delimiter", ";;"])
    assert bad_sep.returncode == 2 and "single separator" in bad_sep.stderr


def test_a_typo_in_a_column_name_gets_a_did_you_mean(tmp_path):
    """`lookup_vale` is refused (exit 2) with "did you mean 'lookup_value'"."""
    sheet = write_csv(tmp_path / "s.csv", [{
        "event_type": "order_completed", "lookup_key": "order_id", "lookup_vale": "ORD-1",
        "event_time": "2026-09", "set.final_price": "1"}])
    res = run_cli(["validate", str(sheet)])
    assert res.returncode == 2, res.stdout + res.stderr
    assert "did you mean 'lookup_value' instead of 'lookup_vale'?" in res.stderr


def config(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "corrections.toml"
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)
    return path


def test_an_unknown_config_key_is_refused_with_a_did_you_mean(tmp_path):
    """`concurency = 4` is not silently ignored: exit 2, "did you mean 'concurrency'"."""
    sheet = write_csv(tmp_path / "s.csv", [{"order_id": "ORD-1002", "set.final_price": "1"}])
    cfg = config(tmp_path, "[corrections]\nconcurency = 4\n")
    res = run_cli(["validate", str(sheet), *LOOKUP, "--config", str(cfg)])
    assert res.returncode == 2, res.stdout + res.stderr
    assert "unknown key 'concurency'; did you mean 'concurrency'?" in res.stderr


def test_config_keys_of_other_commands_are_accepted(tmp_path):
    """One file serves every command: `wait` (verify's) and `concurrency` do not stop validate."""
    sheet = write_csv(tmp_path / "s.csv", [{"order_id": "ORD-1002", "set.final_price": "1"}])
    cfg = config(tmp_path, "[corrections]\nwait = 30\nconcurrency = 4\nevent-type = 'x'\n")
    res = run_cli(["validate", str(sheet), *LOOKUP, "--config", str(cfg)])
    assert res.returncode == 0, res.stdout + res.stderr


def test_an_implicit_config_file_writable_by_others_is_refused(tmp_path):
    """./corrections.toml that others can write could redirect the token: exit 2 and why."""
    sheet = write_csv(tmp_path / "s.csv", [{"order_id": "ORD-1002", "set.final_price": "1"}])
    config(tmp_path, "[corrections]\nconcurrency = 4\n", mode=0o666)
    res = run_cli(["validate", str(sheet), *LOOKUP], cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "writable by other users" in res.stderr and "chmod go-w" in res.stderr


def test_the_config_file_and_the_api_host_are_announced_at_start(sandbox, tmp_path):
    """A run says which config file it read (found implicitly) and which API host it talks to."""
    sheet = write_csv(tmp_path / "s.csv", [{"order_id": "ORD-1002", "set.final_price": "1"}])
    config(tmp_path, f"[corrections]\napi-url = '{sandbox.url}'\nconcurrency = 2\n")
    res = run_cli(["apply", str(sheet), *LOOKUP], env=ENV, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    host = sandbox.url.split("//", 1)[1].rstrip("/")
    assert "config file corrections.toml (found in the working directory)" in res.stderr
    assert f"API host {host}" in res.stderr
