"""Sheet values never drive the terminal or forge log lines: control characters are escaped."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
from conftest import run_cli

from pipeline.logs import TextFormatter
from pipeline.sandbox.server import SANDBOX_TOKEN
from pipeline.textsafe import printable

ENV = {"USERMAVEN_TOKEN": SANDBOX_TOKEN}
TITLE = "\x1b]0;owned\x07"
CLEAR = "\x1b[2J"
RAW = ("\x1b", "\x07", "\r", "\x9b", "\u202e", "\x00", "\x7f")
COLUMNS = ["event_type", "lookup_key", "lookup_value", "event_time", "event_id", "timestamp",
           "merge_mode", "set.note"]
ROWS = [
    ["order_completed", "order_id", f"ORD-1001{TITLE}", "2026-09", "", "", "", "x"],
    ["order_completed", "order_id", "ORD-1002", "2026-09", "", "", "",
     f"a\rb{CLEAR}\u202etxt.exe\x9b31m"],
    ["order_completed", "order_id", "ORD-1004", "2026-09", "", "", f"{CLEAR}merge", "x"],
    [f"order{TITLE}", "order_id", "ORD-1005", "2026-09", "", "", "", "x"],
    ["order_completed", "", "", "", f"\r\x1b[1Afake{CLEAR}", "2026-09-01", "", "x"],
    ["order_completed", "order_id", "ORD-1006\rcorrections: error: forged", "2026-09", "",
     "", "", "\x7f\x00"],
]


def hostile_sheet(path: Path) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        w.writerow(COLUMNS)
        w.writerows(ROWS)
    return path


def assert_escaped(*texts: str) -> None:
    joined = "".join(texts)
    for raw in RAW:
        assert raw not in joined, f"raw {raw!r} reached the terminal"
    assert "\\x1b" in joined  # shown, escaped, so the user sees what the sheet holds


@pytest.mark.parametrize("command", ["validate", "plan", "apply"])
def test_control_characters_from_the_sheet_never_reach_the_terminal(sandbox, tmp_path,
                                                                    command):
    """validate/plan/apply print escape sequences and line breaks from cells escaped."""
    sheet = hostile_sheet(tmp_path / "fixes.csv")
    args = [command, str(sheet)]
    if command != "validate":
        args += ["--api-url", sandbox.url, "--checkpoint", str(tmp_path / "cp.sqlite"),
                 "--report", str(tmp_path / "audit.csv"), "--verbose"]
    res = run_cli(args, env=ENV)
    assert res.returncode in (1, 2), res.stderr
    assert "Traceback" not in res.stderr
    assert_escaped(res.stdout, res.stderr)
    if command == "plan":
        assert "\\u202etxt.exe" in res.stdout


def test_status_and_report_commands_escape_what_the_checkpoint_holds(sandbox, tmp_path):
    """A sheet file name with an escape sequence is shown escaped by `status` too."""
    sheet = hostile_sheet(tmp_path / f"fixes{CLEAR}.csv")
    res = run_cli(["apply", str(sheet), "--api-url", sandbox.url, "--checkpoint",
                   str(tmp_path / "cp.sqlite"), "--report", str(tmp_path / "audit.csv")],
                  env=ENV)
    assert res.returncode == 1, res.stderr
    assert_escaped(res.stdout, res.stderr)
    status = run_cli(["status", "--checkpoint", str(tmp_path / "cp.sqlite")])
    assert status.returncode == 0, status.stderr
    assert_escaped(status.stdout, status.stderr)


def test_a_text_log_line_cannot_be_forged_by_a_value(tmp_path):
    """A line break in a logged value stays on the same log line, escaped."""
    record = logging.makeLogRecord({"msg": "row %s: %s", "args": (
        7, "failed (ORD-1\ncorrections: error: forged\x1b[2J)"), "levelno": logging.INFO})
    line = TextFormatter().format(record)
    assert "\n" not in line and "\x1b" not in line
    assert line.endswith("failed (ORD-1\\ncorrections: error: forged\\x1b[2J)")


@pytest.mark.parametrize(("raw", "shown"), [
    ("a\x1b[2Jb", "a\\x1b[2Jb"), ("\r\n\t", "\\r\\n\\t"), ("\x9b\x7f\x00", "\\x9b\\x7f\\x00"),
    ("\u202eexe.txt", "\\u202eexe.txt"), ("café ORD-1", "café ORD-1"), ("\u2028", "\\u2028"),
])
def test_printable_escapes_every_control_character_and_keeps_text(raw, shown):
    """C0/C1 controls, DEL, bidi overrides and line separators are escaped; letters are not."""
    assert printable(raw) == shown
