"""Reading correction sheets: CSV, Parquet and XLSX, header checks, damaged rows."""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import SheetError
from pipeline.model import SheetDefaults
from pipeline.sheet import (
    MAX_CELL_CHARS,
    RawRow,
    check_columns,
    columns,
    fingerprint,
    read_rows,
)

HEADER = "event_id,timestamp,set.price\n"
EID = "550e8400-e29b-41d4-a716-446655440000"


def write(tmp_path: Path, data: str | bytes, name: str = "sheet.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def rows_of(path: Path, **kwargs) -> list[RawRow]:
    return [row for batch in read_rows(path, **kwargs) for row in batch]


def write_parquet(tmp_path: Path, table: pa.Table, name: str = "sheet.parquet") -> Path:
    path = tmp_path / name
    pq.write_table(table, path)
    return path


def write_xlsx(tmp_path: Path, sheets: dict[str, list[list]], name: str = "sheet.xlsx") -> Path:
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for title, rows in sheets.items():
        ws = wb.create_sheet(title)
        for row in rows:
            ws.append(row)
    path = tmp_path / name
    wb.save(path)
    wb.close()
    return path


# --------------------------------------------------------------------------- CSV text


def test_csv_cells_stay_exact_text(tmp_path):
    """CSV cells are text exactly as written: leading zeros and trailing decimals survive."""
    path = write(tmp_path, "lookup_value,set.price,set.code\n00123,149.90,=HYPERLINK(\"x\")\n")
    [row] = rows_of(path)
    assert row.cells == {"lookup_value": "00123", "set.price": "149.90",
                         "set.code": '=HYPERLINK("x")'}
    assert row.row_number == 2 and row.problem is None


def test_csv_empty_cells_are_not_given(tmp_path):
    """Empty CSV cells are left out of the row's cells."""
    path = write(tmp_path, HEADER + f"{EID},,9\n")
    [row] = rows_of(path)
    assert row.cells == {"event_id": EID, "set.price": "9"}


def test_csv_byte_order_mark_is_ignored(tmp_path):
    """A UTF-8 byte order mark does not become part of the first column name."""
    path = write(tmp_path, b"\xef\xbb\xbf" + HEADER.encode() + f"{EID},2026-03-01,1\n".encode())
    assert columns(path) == ["event_id", "timestamp", "set.price"]
    assert rows_of(path)[0].cells["event_id"] == EID


@pytest.mark.parametrize("newline", ["\r\n", "\r", "\n"])
def test_csv_any_line_ending_gives_same_rows(tmp_path, newline):
    """CRLF, CR-only and LF files give the same rows and row numbers."""
    text = newline.join(["event_id,set.price", f"{EID},1", f"{EID},2", ""])
    rows = rows_of(write(tmp_path, text))
    assert [(r.row_number, r.cells["set.price"]) for r in rows] == [(2, "1"), (3, "2")]


def test_csv_quoted_newline_does_not_shift_row_numbers(tmp_path):
    """Row numbers count records, so a cell with line breaks does not shift later rows."""
    text = 'event_id,set.note\nA,"line one\nline two\r\nline three"\nB,x\n'
    rows = rows_of(write(tmp_path, text))
    assert [r.row_number for r in rows] == [2, 3]
    assert rows[0].cells["set.note"] == "line one\nline two\r\nline three"


def test_csv_blank_rows_are_skipped_but_counted(tmp_path):
    """Blank lines and all-empty rows are skipped; the rows after keep their sheet numbers."""
    text = "event_id,set.price\nA,1\n\n,\nB,2\n"
    rows = rows_of(write(tmp_path, text))
    assert [(r.row_number, r.cells["event_id"]) for r in rows] == [(2, "A"), (5, "B")]


def test_csv_header_only_yields_no_rows(tmp_path):
    """A sheet with a header and no data rows yields no batches."""
    assert rows_of(write(tmp_path, HEADER)) == []


def test_csv_rows_come_in_batches_of_the_requested_size(tmp_path):
    """read_rows yields lists of at most batch_size rows, in sheet order."""
    text = "event_id,set.price\n" + "".join(f"A,{i}\n" for i in range(7))
    batches = list(read_rows(write(tmp_path, text), batch_size=3))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert [r.row_number for b in batches for r in b] == list(range(2, 9))


def test_csv_header_names_are_stripped(tmp_path):
    """Whitespace around header names is removed."""
    assert columns(write(tmp_path, " event_id , set.price\nA,1\n")) == ["event_id", "set.price"]


# --------------------------------------------------------------------------- damaged CSV


def test_empty_file_is_a_sheet_error(tmp_path):
    """A zero-byte file is refused with a message naming the file."""
    path = write(tmp_path, b"")
    with pytest.raises(SheetError, match=r"sheet.csv.*empty"):
        columns(path)
    with pytest.raises(SheetError, match="empty"):
        rows_of(path)


def test_file_of_blank_lines_has_no_header(tmp_path):
    """A file with only blank lines is refused: there is no header row."""
    with pytest.raises(SheetError, match="no header"):
        columns(write(tmp_path, "\n\n\r\n"))


def test_missing_file_is_a_sheet_error(tmp_path):
    """A path that does not exist is refused with a clear message."""
    with pytest.raises(SheetError, match="no such file"):
        columns(tmp_path / "nope.csv")


def test_unsupported_suffix_is_a_sheet_error(tmp_path):
    """Only .csv, .parquet/.pq and .xlsx are accepted."""
    with pytest.raises(SheetError, match=r"unsupported.*\.xls.*\.csv"):
        columns(write(tmp_path, "a\n", name="sheet.xls"))


def test_sheet_name_on_csv_is_a_sheet_error(tmp_path):
    """--sheet-name only makes sense for workbooks."""
    with pytest.raises(SheetError, match="sheet-name"):
        rows_of(write(tmp_path, HEADER), sheet_name="x")


def test_utf16_file_is_a_sheet_error(tmp_path):
    """A UTF-16 file is refused with a hint to save as UTF-8."""
    with pytest.raises(SheetError, match="UTF-16"):
        columns(write(tmp_path, HEADER.encode("utf-16")))


def test_duplicate_columns_are_a_sheet_error(tmp_path):
    """A column name that appears twice is refused."""
    with pytest.raises(SheetError, match=r"duplicate.*'set.price'"):
        columns(write(tmp_path, "event_id,set.price,set.price\nA,1,2\n"))


def test_ragged_rows_become_problem_rows(tmp_path):
    """Rows with more or fewer cells than the header are problems; other rows still read."""
    text = "event_id,timestamp,set.price\nA,t,1\nB,t\nC,t,1,extra\nD,t,4\n"
    rows = rows_of(write(tmp_path, text))
    assert [r.row_number for r in rows] == [2, 3, 4, 5]
    assert rows[0].problem is None and rows[3].problem is None
    assert "2 cells but the header has 3" in rows[1].problem
    assert "4 cells but the header has 3" in rows[2].problem
    assert rows[2].cells["#4"] == "extra"


def test_stray_quote_becomes_a_problem_row(tmp_path):
    """A quote in the wrong place is a problem for that row only."""
    text = 'event_id,set.price\nA,"1"x\nB,2\n'
    rows = rows_of(write(tmp_path, text))
    assert rows[0].row_number == 2 and "cannot be read as CSV" in rows[0].problem
    assert (rows[1].row_number, rows[1].cells, rows[1].problem) == (3, {"event_id": "B",
                                                                         "set.price": "2"}, None)


def test_file_cut_mid_row_becomes_a_problem_row(tmp_path):
    """A file that ends inside a quoted cell reports its last row as a problem."""
    text = 'event_id,set.price\nA,1\nB,"2'
    rows = rows_of(write(tmp_path, text))
    assert rows[0].problem is None
    assert rows[1].row_number == 3 and "cut off" in rows[1].problem


def test_unbalanced_quote_swallowing_the_file_is_a_sheet_error(tmp_path):
    """A quote that never closes and swallows later lines stops reading, naming the row."""
    text = 'event_id,set.price\nA,1\nB,"2\nC,3\nD,4\n'
    with pytest.raises(SheetError, match=r"row 3 \(line 3\).*never closes"):
        rows_of(write(tmp_path, text))


def test_non_utf8_bytes_become_a_problem_row(tmp_path):
    """A row with bytes that are not UTF-8 is a problem naming the column; others read fine."""
    data = b"event_id,set.name\nA,caf\xe9\nB,caf\xc3\xa9\n"
    rows = rows_of(write(tmp_path, data))
    assert "not valid UTF-8" in rows[0].problem and rows[0].column == "set.name"
    assert rows[0].cells["set.name"] == "caf\ufffd"
    assert rows[1].cells["set.name"] == "café" and rows[1].problem is None


def test_non_utf8_header_is_a_sheet_error(tmp_path):
    """A header that is not UTF-8 is refused with a hint."""
    with pytest.raises(SheetError, match="UTF-8"):
        columns(write(tmp_path, b"event_id,set.caf\xe9\n"))


def test_100000_character_cell_is_read_whole(tmp_path):
    """A 100 000-character cell is kept intact."""
    big = "x" * 100_000
    [row] = rows_of(write(tmp_path, f'event_id,set.note\nA,"{big}"\n'))
    assert row.problem is None and row.cells["set.note"] == big


def test_cell_over_the_limit_becomes_a_problem_row(tmp_path):
    """A cell over about 1 MB is a problem row, stored shortened, and the next row reads."""
    big = "y" * (MAX_CELL_CHARS + 1)
    rows = rows_of(write(tmp_path, f"event_id,set.note\nA,{big}\nB,ok\n"))
    assert rows[0].column == "set.note" and "characters" in rows[0].problem
    assert len(rows[0].cells["set.note"]) < 300
    assert rows[1].cells == {"event_id": "B", "set.note": "ok"}


def test_value_in_unnamed_column_is_a_problem(tmp_path):
    """Columns without a header name are ignored, but a value in one is a problem."""
    rows = rows_of(write(tmp_path, "event_id,set.price,\nA,1,\nB,2,oops\n"))
    assert rows[0].cells == {"event_id": "A", "set.price": "1"} and rows[0].problem is None
    assert "no header name" in rows[1].problem


def test_fingerprint_is_sha256_of_the_bytes(tmp_path):
    """fingerprint() is the SHA-256 hex digest of the file's bytes."""
    path = write(tmp_path, HEADER + "A,1,2\n")
    assert fingerprint(path) == hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- header rules


def test_unknown_column_is_refused_with_a_set_hint():
    """An unknown column is refused, with a hint on how to name attribute columns."""
    with pytest.raises(SheetError, match=r"unknown column.*'price'.*set\.<name>") as err:
        check_columns(["event_id", "timestamp", "price"], SheetDefaults(), source="s.csv")
    assert str(err.value).startswith("s.csv: ")


def test_wrongly_cased_column_gets_a_case_hint():
    """A known column in the wrong case is refused with a case-sensitivity hint."""
    with pytest.raises(SheetError, match=r"case-sensitive.*'event_id'"):
        check_columns(["Event_ID", "timestamp", "set.x"], SheetDefaults())


def test_bare_set_prefix_is_unknown():
    """`set.` with no attribute name is not an attribute column."""
    with pytest.raises(SheetError, match=r"unknown column.*'set.'"):
        check_columns(["event_id", "timestamp", "set."], SheetDefaults())


def test_match_column_is_allowed_only_with_match():
    """The --match column is allowed when --match names it, unknown otherwise."""
    cols = ["event_type", "order_id", "event_time", "set.price"]
    check_columns(cols, SheetDefaults(match="order_id"))
    with pytest.raises(SheetError, match=r"unknown column.*'order_id'.*--match"):
        check_columns(cols, SheetDefaults())


def test_missing_something_to_set_is_refused():
    """A header with no set.* and no event_attributes column is refused."""
    with pytest.raises(SheetError, match="nothing to set"):
        check_columns(["event_id", "timestamp"], SheetDefaults())


def test_missing_way_to_find_events_is_refused():
    """Without event_id, the header needs an event type and a lookup key/value."""
    with pytest.raises(SheetError, match=r"no way to find.*event_type.*lookup_key"):
        check_columns(["event_time", "set.x"], SheetDefaults())
    with pytest.raises(SheetError, match="--event-type"):
        check_columns(["lookup_key", "lookup_value", "event_time", "set.x"], SheetDefaults())
    check_columns(["lookup_key", "lookup_value", "event_time", "set.x"],
                  SheetDefaults(event_type="order_completed"))


def test_event_id_without_timestamp_column_is_refused():
    """An event_id column needs a timestamp (or event_time) column."""
    with pytest.raises(SheetError, match="timestamp"):
        check_columns(["event_id", "set.x"], SheetDefaults())
    check_columns(["event_id", "event_time", "set.x"], SheetDefaults())


def test_match_naming_a_missing_column_is_refused():
    """--match must name a column of the sheet."""
    with pytest.raises(SheetError, match="--match order_id"):
        check_columns(["event_type", "event_time", "set.x"], SheetDefaults(match="order_id"))


def test_lookup_key_without_lookup_value_is_refused():
    """lookup_key and lookup_value columns go together."""
    with pytest.raises(SheetError, match="lookup_key needs a lookup_value"):
        check_columns(["event_type", "lookup_key", "event_time", "set.x"], SheetDefaults())


def test_lookup_without_any_window_is_refused():
    """A lookup-only sheet needs window columns, event_time or --from/--to."""
    cols = ["event_type", "lookup_key", "lookup_value", "set.x"]
    with pytest.raises(SheetError, match="no lookup window"):
        check_columns(cols, SheetDefaults())
    check_columns(cols, SheetDefaults(from_=dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
                                      to=dt.datetime(2026, 4, 1, tzinfo=dt.UTC)))


def test_semicolon_separated_header_gets_a_separator_hint():
    """A header that is one cell with semicolons hints at the separator."""
    with pytest.raises(SheetError, match="separated by ';'"):
        check_columns(["event_id;timestamp;set.x"], SheetDefaults())


# --------------------------------------------------------------------------- Parquet


def test_parquet_keeps_types_and_drops_null_and_nan(tmp_path):
    """Parquet ints, floats, bools and strings stay typed; None and NaN are not given."""
    table = pa.table({
        "event_id": ["A", "B"],
        "set.count": pa.array([3, None], pa.int64()),
        "set.price": [149.9, float("nan")],
        "set.flag": [True, None],
        "set.code": ["00123", None],
        "set.small": pa.array([1.5, None], pa.float32()),
    })
    rows = rows_of(write_parquet(tmp_path, table))
    assert rows[0].cells == {"event_id": "A", "set.count": 3, "set.price": 149.9,
                             "set.flag": True, "set.code": "00123", "set.small": 1.5}
    assert type(rows[0].cells["set.count"]) is int
    assert rows[1].cells == {"event_id": "B"}
    assert [r.row_number for r in rows] == [2, 3]


def test_parquet_timestamps_become_datetimes(tmp_path):
    """Parquet timestamps (naive, zoned, nanosecond) become datetimes, dates stay dates."""
    table = pa.table({
        "timestamp": pa.array([dt.datetime(2026, 3, 10, 14, 30)], pa.timestamp("ms")),
        "event_time": pa.array([1_773_153_000_000_000_123], pa.timestamp("ns", tz="UTC")),
        "set.day": pa.array([dt.date(2026, 3, 1)], pa.date32()),
    })
    [row] = rows_of(write_parquet(tmp_path, table))
    assert row.cells["timestamp"] == dt.datetime(2026, 3, 10, 14, 30)
    assert type(row.cells["event_time"]) is dt.datetime
    assert row.cells["event_time"].tzinfo is not None
    assert row.cells["set.day"] == dt.date(2026, 3, 1)


def test_parquet_odd_types(tmp_path):
    """Decimals become exact text, binary is a problem, nested data only in event_attributes."""
    table = pa.table({
        "event_id": ["A", "B", "C", "D"],
        "set.price": pa.array([Decimal("149.90"), None, None, None], pa.decimal128(6, 2)),
        "set.blob": pa.array([None, b"\x00\x01", None, None], pa.binary()),
        "set.tags": pa.array([None, None, ["a"], None], pa.list_(pa.string())),
        "event_attributes": pa.array(
            [None, None, None, {"a": 1, "b": {"c": "d"}}],
            pa.struct([("a", pa.int64()), ("b", pa.struct([("c", pa.string())]))])),
    })
    rows = rows_of(write_parquet(tmp_path, table))
    assert rows[0].cells["set.price"] == "149.90" and rows[0].problem is None
    assert rows[1].column == "set.blob" and "binary" in rows[1].problem
    assert rows[2].column == "set.tags" and "only event_attributes" in rows[2].problem
    assert rows[3].cells["event_attributes"] == {"a": 1, "b": {"c": "d"}}
    assert rows[3].problem is None


def test_parquet_map_and_dictionary_columns(tmp_path):
    """A Parquet map in event_attributes becomes an object; dictionary strings become text."""
    table = pa.table({
        "event_type": pa.array(["order", "order"]).dictionary_encode(),
        "event_attributes": pa.array([[("k", "v")], None], pa.map_(pa.string(), pa.string())),
    })
    rows = rows_of(write_parquet(tmp_path, table))
    assert rows[0].cells == {"event_type": "order", "event_attributes": {"k": "v"}}
    assert rows[1].cells == {"event_type": "order"}


def test_parquet_batches_and_header(tmp_path):
    """Parquet rows come in batches with continuous row numbers; columns() gives the schema."""
    path = write_parquet(tmp_path, pa.table({"event_id": [str(i) for i in range(5)],
                                             "set.x": list(range(5))}))
    assert columns(path) == ["event_id", "set.x"]
    batches = list(read_rows(path, batch_size=2))
    assert [len(b) for b in batches] == [2, 2, 1]
    assert [r.row_number for b in batches for r in b] == [2, 3, 4, 5, 6]


def test_corrupt_parquet_is_a_sheet_error(tmp_path):
    """A file named .parquet that is not Parquet is refused."""
    with pytest.raises(SheetError, match="not a readable Parquet"):
        columns(write(tmp_path, b"not parquet at all", name="s.parquet"))


# --------------------------------------------------------------------------- XLSX


def test_xlsx_cells_keep_their_type_like_parquet(tmp_path):
    """Excel numbers stay numbers (whole ones as int), booleans booleans, dates dates; text
    cells (`00123`) stay the text they hold."""
    path = write_xlsx(tmp_path, {"Fixes": [
        ["event_id", "timestamp", "set.n", "set.price", "set.ok", "set.code", "set.empty"],
        [EID, dt.datetime(2026, 3, 10, 14, 30), 123, 149.9, True, "00123", None],
        [EID, dt.date(2026, 3, 10), 0.1 + 0.2, 1e-7, False, "=HYPERLINK", ""],
    ]})
    rows = rows_of(path)
    assert rows[0].cells == {"event_id": EID, "timestamp": dt.datetime(2026, 3, 10, 14, 30),
                             "set.n": 123, "set.price": 149.9, "set.ok": True,
                             "set.code": "00123"}
    assert type(rows[0].cells["set.n"]) is int
    assert rows[1].cells["set.n"] == pytest.approx(0.3)  # Excel stores 15 digits
    assert rows[1].cells["set.price"] == 1e-7 and rows[1].cells["set.ok"] is False
    assert rows[1].cells["timestamp"] in (dt.date(2026, 3, 10), dt.datetime(2026, 3, 10))
    assert [r.row_number for r in rows] == [2, 3]


def test_xlsx_formula_looking_text_passes_through(tmp_path):
    """A text cell that looks like a formula is read as that text."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["event_id", "set.link"])
    ws["A2"] = EID
    ws["B2"].value = '=HYPERLINK("http://x")'
    ws["B2"].data_type = "s"
    path = tmp_path / "f.xlsx"
    wb.save(path)
    wb.close()
    [row] = rows_of(path)
    assert row.cells["set.link"] == '=HYPERLINK("http://x")'


def test_xlsx_sheet_name_selects_the_sheet(tmp_path):
    """--sheet-name picks the sheet; the default is the first one."""
    path = write_xlsx(tmp_path, {
        "First": [["event_id", "set.x"], ["A", "1"]],
        "Second": [["event_id", "set.y"], ["B", "2"], ["C", "3"]],
    })
    assert columns(path) == ["event_id", "set.x"]
    assert columns(path, sheet_name="Second") == ["event_id", "set.y"]
    rows = rows_of(path, sheet_name="Second")
    assert [(r.row_number, r.cells["event_id"]) for r in rows] == [(2, "B"), (3, "C")]


def test_xlsx_unknown_sheet_name_lists_the_sheets(tmp_path):
    """An unknown --sheet-name is refused with the list of sheets."""
    path = write_xlsx(tmp_path, {"First": [["event_id"]], "Second": [["event_id"]]})
    with pytest.raises(SheetError, match=r"no sheet named 'Third'.*'First', 'Second'"):
        rows_of(path, sheet_name="Third")


def test_xlsx_rows_keep_excel_row_numbers(tmp_path):
    """Blank Excel rows are skipped and later rows keep the numbers Excel shows."""
    path = write_xlsx(tmp_path, {"S": [["event_id", "set.x"], ["A", 1], [None, None], ["B", 2]]})
    assert [(r.row_number, r.cells["event_id"]) for r in rows_of(path)] == [(2, "A"), (4, "B")]


def test_empty_xlsx_sheet_is_a_sheet_error(tmp_path):
    """A workbook whose sheet holds nothing is refused."""
    path = write_xlsx(tmp_path, {"S": []})
    with pytest.raises(SheetError, match="empty"):
        columns(path)


def test_corrupt_xlsx_is_a_sheet_error(tmp_path):
    """A file named .xlsx that is not a workbook is refused."""
    with pytest.raises(SheetError, match=r"not a readable .xlsx"):
        columns(write(tmp_path, b"nope", name="s.xlsx"))
