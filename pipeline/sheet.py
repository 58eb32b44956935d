"""Reading correction sheets (CSV, Parquet, XLSX) in bounded memory, batch by batch.

The reader knows nothing of corrections: it turns a sheet into numbered rows of non-empty cells
(`RawRow`) and checks the header. `pipeline.validate` turns rows into corrections.

Rules:

* `row_number` is the spreadsheet row number: the header is row 1 and the first data row is row 2.
  CSV rows are counted as records, not physical lines, so a quoted newline does not shift later
  numbers. Leading blank rows before the header are skipped but still counted (so numbers match
  what a spreadsheet program shows).
* Only non-empty cells go into `RawRow.cells`: an empty string, None or NaN means "not given".
  Rows with no non-empty cell at all (blank lines, `,,,`, empty Excel rows) are skipped silently.
* CSV: every cell is text, exactly as written (`00123`, `149.90`). UTF-8, BOM tolerated, any line
  ending. A row that cannot be read (bad UTF-8, wrong number of cells, stray quote, a cell over
  1 MiB) becomes a `RawRow` with a `problem`; the file goes on. A quoted cell that never closes
  and swallows several lines up to the end of the file (or more than 8 MiB) is a `SheetError`,
  because the rows after it cannot be trusted.
* Parquet: types are kept (int, float, bool, str stay themselves; timestamps become datetimes,
  dates dates, decimals their exact text). Lists and structs are only allowed in
  `event_attributes`; binary data anywhere is a row problem.
* XLSX: cells become text like a CSV export would: whole numbers `123`, other numbers with up to
  15 significant digits (what Excel shows), booleans `TRUE`/`FALSE`, dates and times ISO 8601.
* Header names are stripped of surrounding whitespace. Columns with an empty header name are
  ignored, but a value in such a column makes that row a problem.
"""

from __future__ import annotations

import csv
import hashlib
import math
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.errors import SheetError
from pipeline.model import SheetDefaults
from pipeline.targets.mparticle.limits import IDENTITY_KEYS, IDENTITY_PREFIX, MPID_COLUMN

#: Largest cell accepted, in characters (about 1 MB).
MAX_CELL_CHARS = 1 << 20
#: The csv module's own limit: beyond this the parser stops (a runaway unbalanced quote).
CSV_FIELD_LIMIT = 8 << 20

SUPPORTED_SUFFIXES = (".csv", ".parquet", ".pq", ".xlsx")

#: Columns with a fixed meaning; `set.<attr>` and the `--match` column are allowed besides.
KNOWN_COLUMNS = (
    "event_id",
    "timestamp",
    "event_type",
    "lookup_key",
    "lookup_value",
    "from_timestamp",
    "to_timestamp",
    "event_time",
    "event_attributes",
    "merge_mode",
    "idempotency_key",
)
_KNOWN = frozenset(KNOWN_COLUMNS)
SET_PREFIX = "set."

_UNREADABLE_ROW_HINT = "fix this row in the file"


@dataclass(frozen=True)
class RawRow:
    """One data row as read: its spreadsheet row number and its non-empty cells.

    `problem` is set when the row itself could not be read properly (`column` then names the
    cell at fault, when there is one); the row is reported invalid and never sent.
    """

    row_number: int
    cells: dict[str, Any]
    problem: str | None = None
    column: str | None = None


# --------------------------------------------------------------------------- public API


def fingerprint(path: str | Path) -> str:
    """SHA-256 (hex) of the file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError as exc:
        raise SheetError(f"{path}: cannot read the sheet ({exc.strerror or exc})") from None
    return h.hexdigest()


def columns(path: str | Path, sheet_name: str | None = None) -> list[str]:
    """The sheet's header (column names, stripped), after the structural checks.

    Raises `SheetError` for a missing/unreadable file, an unsupported suffix, an empty file, a
    missing header or duplicate column names. Checks that depend on the command line (unknown
    or missing columns) are in `check_columns`.
    """
    path = Path(path)
    kind = _kind(path, sheet_name)
    if kind == "csv":
        with _open_csv(path) as f:
            reader = csv.reader(f, strict=True)
            header, _, _ = _csv_header(reader, path)
            return header
    if kind == "parquet":
        pf = _open_parquet(path)
        with pf:
            return _parquet_header(pf, path)
    with _open_xlsx(path) as wb:
        sheet = _xlsx_sheet(wb, path, sheet_name)
        header, _ = _xlsx_header(iter(sheet.iter_rows()), path)
        return header


def check_columns(
    cols: Sequence[str], defaults: SheetDefaults, *, source: str | Path | None = None
) -> None:
    """Raise `SheetError` unless the header can describe corrections with these defaults.

    Allowed: the known columns, any `set.<attr>`, and the `--match` column. Required: an
    `event_id` column (with `timestamp` or `event_time`), or a way to look events up (an event
    type from the column or `--event-type`, plus `lookup_key`+`lookup_value` or `--match`); and
    something to set (`set.*` or `event_attributes`).
    """
    where = f"{source}: " if source else ""
    names = [c for c in cols if c]
    if not names:
        raise SheetError(f"{where}the header row has no column names; the first row must name "
                         "the columns (e.g. event_id,timestamp,set.final_price)")
    dups = _duplicates(names)
    if dups:
        raise SheetError(f"{where}duplicate column name(s) {_quoted(dups)}: each column may "
                         "appear once; rename or remove the copies")
    match = defaults.match
    unknown = [c for c in names if not _allowed(c, match)]
    if unknown:
        raise SheetError(where + _unknown_message(unknown, match))
    present = set(names)
    has_set = "event_attributes" in present or any(c.startswith(SET_PREFIX) for c in present)
    if not has_set:
        raise SheetError(f"{where}nothing to set: add one column per attribute to write, named "
                         "set.<attribute> (e.g. set.final_price), or an event_attributes column "
                         "holding a JSON object")
    if match and match not in present:
        raise SheetError(f"{where}--match {match} names a column the sheet does not have; "
                         f"add a column {match!r} holding the values to look events up by, or "
                         "change --match")
    if ("lookup_key" in present) != ("lookup_value" in present):
        have, lack = (("lookup_key", "lookup_value") if "lookup_key" in present
                      else ("lookup_value", "lookup_key"))
        if not (have == "lookup_value" and match):
            raise SheetError(f"{where}column {have} needs a {lack} column too (lookup_key names "
                             "the attribute, lookup_value holds the value to find)")
    has_id = "event_id" in present
    if has_id and "timestamp" not in present and "event_time" not in present:
        raise SheetError(f"{where}column event_id needs a timestamp column: the API requires a "
                         "time in each event's calendar month (e.g. 2026-03-10T14:30:00Z)")
    has_type = "event_type" in present or bool(defaults.event_type)
    has_lookup = ("lookup_key" in present and "lookup_value" in present) or bool(match)
    if not has_id and not (has_type and has_lookup):
        missing = []
        if not has_type:
            missing.append("an event_type column or --event-type")
        if not has_lookup:
            missing.append("lookup_key + lookup_value columns or --match <column>")
        raise SheetError(f"{where}no way to find the events: add an event_id column (with "
                         f"timestamp), or give {' and '.join(missing)}")
    if not has_id:
        has_window = (
            "from_timestamp" in present or "to_timestamp" in present
            or "event_time" in present or (defaults.from_ is not None and defaults.to is not None)
        )
        if not has_window:
            raise SheetError(f"{where}no lookup window: add from_timestamp/to_timestamp "
                             "columns or an event_time column, or pass --from and --to")


def read_rows(
    path: str | Path, *, batch_size: int = 5000, sheet_name: str | None = None
) -> Iterator[list[RawRow]]:
    """Yield the sheet's non-blank data rows in lists of at most `batch_size`.

    Raises `SheetError` (on the first `next`) for file-level problems; see the module docstring.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    path = Path(path)
    kind = _kind(path, sheet_name)
    if kind == "csv":
        rows = _csv_rows(path)
    elif kind == "parquet":
        rows = _parquet_rows(path, batch_size)
    else:
        rows = _xlsx_rows(path, sheet_name)
    batch: list[RawRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


# --------------------------------------------------------------------------- shared helpers


def _kind(path: Path, sheet_name: str | None) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise SheetError(f"{path}: unsupported sheet type {suffix or '(no suffix)'!r}; save it "
                         "as .csv (UTF-8), .parquet or .xlsx")
    if not path.exists():
        raise SheetError(f"{path}: no such file; check the path")
    if not path.is_file():
        raise SheetError(f"{path}: not a regular file; give the path of the sheet itself")
    kind = {".csv": "csv", ".xlsx": "xlsx"}.get(suffix, "parquet")
    if sheet_name is not None and kind != "xlsx":
        raise SheetError(f"{path}: --sheet-name only applies to .xlsx workbooks; drop it")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SheetError(f"{path}: cannot read the sheet ({exc.strerror or exc})") from None
    if size == 0:
        raise SheetError(f"{path}: the file is empty; it needs a header row and data rows")
    return kind


def _duplicates(names: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    dups: list[str] = []
    for n in names:
        if n in seen and n not in dups:
            dups.append(n)
        seen.add(n)
    return dups


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _allowed(col: str, match: str | None) -> bool:
    if col in _KNOWN or col == match:
        return True
    if col.startswith(IDENTITY_PREFIX) or col == MPID_COLUMN:  # mParticle's user
        return col == MPID_COLUMN or col[len(IDENTITY_PREFIX):] in IDENTITY_KEYS
    return col.startswith(SET_PREFIX) and len(col) > len(SET_PREFIX)


def _unknown_message(unknown: list[str], match: str | None) -> str:
    msg = f"unknown column(s) {_quoted(unknown)}."
    hints = []
    lower = {k.lower(): k for k in KNOWN_COLUMNS}
    for col in unknown:
        if col.lower() in lower:
            hints.append(f"column names are case-sensitive: write {lower[col.lower()]!r} "
                         f"instead of {col!r}")
        elif col == SET_PREFIX:
            hints.append("'set.' needs an attribute name after the dot, e.g. set.final_price")
        elif col.startswith(IDENTITY_PREFIX):
            hints.append(f"{col!r} is not an mParticle identity; the Events API accepts "
                         + ", ".join(IDENTITY_PREFIX + k for k in IDENTITY_KEYS))
        elif ";" in col or "\t" in col:
            hints.append("the header looks separated by ';' or tabs; save the sheet as "
                         "comma-separated CSV")
    hints.append("to write an attribute name the column set.<name> (e.g. set.final_price)")
    if not match:
        hints.append("to look events up by a column's values pass --match <column>")
    return (f"{msg} Allowed columns: {', '.join(KNOWN_COLUMNS)}, set.<attribute>, "
            "identity.<key>, mpid (the mParticle user)"
            + (f" and {match!r} (--match)" if match else "") + ". Hint: " + "; ".join(hints)
            + ".")


def _check_header(header: list[str], path: Path) -> None:
    if not any(header):
        raise SheetError(f"{path}: the header row has no column names; the first row must name "
                         "the columns (e.g. event_id,timestamp,set.final_price)")
    dups = _duplicates([h for h in header if h])
    if dups:
        raise SheetError(f"{path}: duplicate column name(s) {_quoted(dups)}: each column may "
                         "appear once; rename or remove the copies")


def _sanitize(text: str) -> str:
    """Text safe to print and store: undecodable bytes become U+FFFD, huge cells a digest."""
    if len(text) > 200:
        digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        text = f"{text[:100]}… <{len(text)} characters, sha256 {digest}>"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text


def _bad_bytes(text: str) -> str:
    raw = text.encode("utf-8", "surrogateescape")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return raw[exc.start:exc.start + 4].hex(" ")
    return ""  # pragma: no cover


# --------------------------------------------------------------------------- CSV


def _open_csv(path: Path):
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise SheetError(f"{path}: cannot read the sheet ({exc.strerror or exc})") from None
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SheetError(f"{path}: the file is UTF-16; save it as CSV UTF-8")
    if head.startswith(b"PK\x03\x04"):
        raise SheetError(f"{path}: this looks like an Excel workbook, not CSV text; name it "
                         ".xlsx or export it as CSV UTF-8")
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as exc:
        raise SheetError(f"{path}: cannot read the sheet ({exc.strerror or exc})") from None


def _csv_header(reader, path: Path) -> tuple[list[str], int, int]:
    """Read up to the header: (header, its row number, physical line count so far)."""
    record = 0
    while True:
        record += 1
        try:
            row = next(reader)
        except StopIteration:
            raise SheetError(f"{path}: no header row (the file holds only blank lines); the "
                             "first row must name the columns") from None
        except csv.Error as exc:
            raise SheetError(f"{path}: the header row (row {record}) cannot be read as CSV "
                             f"({exc}); fix its quotes") from None
        if any(row):
            break
    header = [c.strip() for c in row]
    joined = "".join(header)
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:
        raise SheetError(f"{path}: the header row is not valid UTF-8 (bytes "
                         f"{_bad_bytes(joined)}); save the file as CSV UTF-8") from None
    _check_header(header, path)
    return header, record, reader.line_num


def _csv_rows(path: Path) -> Iterator[RawRow]:
    with _open_csv(path) as f:
        reader = csv.reader(f, strict=True)
        header, record, prev_line = _csv_header(reader, path)
        width = len(header)
        unnamed = [i for i, h in enumerate(header) if not h]
        while True:
            record += 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                start = prev_line + 1
                span = reader.line_num - prev_line
                prev_line = reader.line_num
                text = str(exc)
                if text == "unexpected end of data":
                    if span > 1:
                        raise SheetError(
                            f"{path}: row {record} (line {start}): a quoted cell opened here "
                            f"never closes and swallows the remaining {span} lines of the file; "
                            "fix the unbalanced quote (or re-export the file if it was cut off)"
                        ) from None
                    yield RawRow(record, {}, "the file ends inside a quoted cell: an unbalanced "
                                 "quote, or the file was cut off mid-row; fix or remove the row")
                    return
                if text.startswith("field larger than field limit"):
                    if span > 1:
                        raise SheetError(
                            f"{path}: row {record} (line {start}): a cell grows past "
                            f"{CSV_FIELD_LIMIT >> 20} MiB across {span} lines, almost surely an "
                            "unbalanced quote; fix the quote"
                        ) from None
                    yield RawRow(record, {}, f"a cell is larger than {CSV_FIELD_LIMIT >> 20} "
                                 f"MiB (the limit is {MAX_CELL_CHARS >> 20} MiB); shorten it")
                    continue
                yield RawRow(record, {}, f"the row cannot be read as CSV ({text}): a quote "
                             "inside a cell must be doubled (\"\") and the cell quoted; "
                             + _UNREADABLE_ROW_HINT)
                continue
            prev_line = reader.line_num
            if len(row) == width and not unnamed:
                cells = {k: v for k, v in zip(header, row, strict=True) if v}
                if not cells:
                    continue
            elif not any(row):
                continue
            else:
                cells = None  # ragged row or unnamed columns: the slow path decides
            joined = "".join(row)
            try:
                joined.encode("utf-8")
                bad_utf8 = False
            except UnicodeEncodeError:
                bad_utf8 = True
            if cells is not None and not bad_utf8 and len(joined) <= MAX_CELL_CHARS:
                yield RawRow(record, cells)
                continue
            raw = _csv_problem_row(record, header, row, bad_utf8)
            if raw.cells or raw.problem:
                yield raw


def _csv_problem_row(record: int, header: list[str], row: list[str], bad_utf8: bool) -> RawRow:
    """The slow path: ragged rows, unnamed columns, bad UTF-8, oversized cells."""
    names = list(header) + [f"#{i + 1}" for i in range(len(header), len(row))]
    cells = {}
    for i, v in enumerate(row):
        if v:
            cells[names[i] or f"#{i + 1}"] = v
    safe = {k: _sanitize(v) for k, v in cells.items()}
    if bad_utf8:
        for k, v in cells.items():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return RawRow(record, safe, f"not valid UTF-8 (bytes {_bad_bytes(v)}); save the "
                              "file as CSV UTF-8", k)
    for k, v in cells.items():
        if len(v) > MAX_CELL_CHARS:
            return RawRow(record, safe, f"the cell holds {len(v)} characters, over the "
                          f"{MAX_CELL_CHARS} limit; shorten it", k)
    if len(row) != len(header):
        return RawRow(record, safe, f"the row has {len(row)} cells but the header has "
                      f"{len(header)} columns: a separator or quote is probably off; "
                      + _UNREADABLE_ROW_HINT)
    for i, h in enumerate(header):
        if not h and row[i]:
            return RawRow(record, safe, f"a value in column {i + 1}, which has no header name; "
                          "name the column or clear the cell", f"#{i + 1}")
    return RawRow(record, {k: v for k, v in zip(header, row, strict=True) if k and v})


# --------------------------------------------------------------------------- Parquet


def _open_parquet(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise SheetError(f"{path}: not a readable Parquet file ({exc}); check the file or "
                         "re-export it") from None


def _parquet_header(pf, path: Path) -> list[str]:
    header = [str(n).strip() for n in pf.schema_arrow.names]
    if not header:
        raise SheetError(f"{path}: the Parquet file has no columns; it needs a column per "
                         "field (event_id, timestamp, set.<attribute>, ...)")
    _check_header(header, path)
    return header


class _Bad:
    """A Parquet value that cannot be used, with the reason."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _py_value(v: Any, nested: bool = False) -> Any:
    """A Parquet value as the validator expects it; `_Bad` when unusable."""
    if v is None or isinstance(v, str | bool | int):
        return v
    if isinstance(v, float):
        return None if v != v and not nested else v
    if isinstance(v, datetime):
        if hasattr(v, "to_pydatetime"):  # pandas.Timestamp from nanosecond columns
            v = v.to_pydatetime(warn=False)
        return v.isoformat() if nested else v
    if isinstance(v, date | time):
        return v.isoformat() if nested else v
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return _Bad("holds binary data; store it as text")
    if isinstance(v, dict):
        out = {}
        for k, item in v.items():
            item = _py_value(item, True)
            if isinstance(item, _Bad):
                return item
            out[str(k)] = item
        return out
    if isinstance(v, list | tuple):
        if v and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in v):
            return _py_value(dict(v), nested)  # a Parquet map
        items = [_py_value(x, True) for x in v]
        for item in items:
            if isinstance(item, _Bad):
                return item
        return items
    if isinstance(v, timedelta):
        return _Bad("holds a duration; store it as text or a number")
    return _Bad(f"holds a value of type {type(v).__name__} this tool cannot send")


def _parquet_column(arr, name: str) -> tuple[list[Any], bool]:
    """A column's values as Python objects, and whether any of them is `_Bad`."""
    import pyarrow as pa
    import pyarrow.types as pt

    typ = arr.type
    if pt.is_dictionary(typ):
        arr = arr.dictionary_decode()
        typ = arr.type
    if pt.is_integer(typ) or pt.is_boolean(typ) or pt.is_string(typ) or pt.is_large_string(typ):
        return arr.to_pylist(), False
    if pt.is_floating(typ):
        if typ != pa.float64():
            arr = arr.cast(pa.float64())
        return [None if v is None or v != v else v for v in arr.to_pylist()], False
    if pt.is_timestamp(typ) and typ.unit == "ns":
        arr = arr.cast(pa.timestamp("us", tz=typ.tz), safe=False)
    if pt.is_timestamp(typ) or pt.is_date(typ) or pt.is_null(typ):
        return arr.to_pylist(), False
    values = [_py_value(v) for v in arr.to_pylist()]
    if name != "event_attributes":
        for i, v in enumerate(values):
            if isinstance(v, dict | list):
                values[i] = _Bad(f"holds a {'struct' if isinstance(v, dict) else 'list'}; only "
                                 "event_attributes may hold nested data")
    return values, any(isinstance(v, _Bad) for v in values)


def _parquet_rows(path: Path, batch_size: int) -> Iterator[RawRow]:
    import pyarrow as pa

    pf = _open_parquet(path)
    with pf:
        header = _parquet_header(pf, path)
        unnamed = any(not h for h in header)
        record = 1
        try:
            for batch in pf.iter_batches(batch_size=batch_size):
                converted = [_parquet_column(batch.column(i), header[i])
                             for i in range(len(header))]
                cols = [values for values, _ in converted]
                odd = [i for i, (_, has_bad) in enumerate(converted) if has_bad]
                for values in zip(*cols, strict=True):
                    record += 1
                    cells = {k: v for k, v in zip(header, values, strict=True) if v is not None}
                    if not cells:
                        continue
                    if odd or unnamed:
                        problem = _parquet_problem(header, values, odd)
                        if problem is not None:
                            yield RawRow(record, {k: v for k, v in cells.items()
                                                  if not isinstance(v, _Bad)}, *problem)
                            continue
                    yield RawRow(record, cells)
        except (pa.ArrowException, OSError) as exc:
            raise SheetError(f"{path}: the Parquet file cannot be read past row {record} "
                             f"({exc}); check the file or re-export it") from None


def _parquet_problem(header, values, odd) -> tuple[str, str] | None:
    for i in odd:
        v = values[i]
        if isinstance(v, _Bad):
            return f"the cell {v.reason}", header[i]
    for h, v in zip(header, values, strict=True):
        if not h and v is not None:
            return "a value in a column with no name; name the column or clear it", h
    return None


# --------------------------------------------------------------------------- XLSX


def _open_xlsx(path: Path):
    from python_calamine import CalamineError, CalamineWorkbook

    try:
        return CalamineWorkbook.from_path(str(path))
    except (CalamineError, OSError, ValueError) as exc:
        raise SheetError(f"{path}: not a readable .xlsx workbook ({exc}); check the file or "
                         "re-save it from Excel") from None


def _xlsx_sheet(wb, path: Path, sheet_name: str | None):
    names = list(wb.sheet_names)
    if not names:
        raise SheetError(f"{path}: the workbook has no sheets")
    if sheet_name is None:
        return wb.get_sheet_by_index(0)
    if sheet_name not in names:
        raise SheetError(f"{path}: no sheet named {sheet_name!r}; the workbook has "
                         f"{_quoted(names)}; pass one of them with --sheet-name")
    return wb.get_sheet_by_name(sheet_name)


_XLSX_INT_LIMIT = 1e16


def _xlsx_text(v: Any) -> str:
    """An Excel cell as the text a CSV export would hold ("" = empty)."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isfinite(v) and v.is_integer() and abs(v) < _XLSX_INT_LIMIT:
            return str(int(v))
        return f"{v:.15g}"
    if isinstance(v, datetime | date | time):
        return v.isoformat()
    if v is None:
        return ""
    return str(v)


def _xlsx_header(rows: Iterator[list[Any]], path: Path) -> tuple[list[str], int]:
    for index, row in enumerate(rows, start=1):
        header = [_xlsx_text(v).strip() for v in row]
        if any(header):
            _check_header(header, path)
            return header, index
    raise SheetError(f"{path}: the sheet is empty; it needs a header row and data rows")


def _xlsx_rows(path: Path, sheet_name: str | None) -> Iterator[RawRow]:
    with _open_xlsx(path) as wb:
        sheet = _xlsx_sheet(wb, path, sheet_name)
        rows = iter(sheet.iter_rows())
        header, record = _xlsx_header(rows, path)
        width = len(header)
        for row in rows:
            record += 1
            texts = [_xlsx_text(v) for v in row]
            if not any(texts):
                continue
            if len(texts) > width and any(texts[width:]):
                extra = next(i for i in range(width, len(texts)) if texts[i])
                cells = {k: v for k, v in zip(header, texts, strict=False) if v and k}
                yield RawRow(record, cells, f"a value in column {extra + 1}, which has no header "
                             "name; name the column or clear the cell", f"#{extra + 1}")
                continue
            cells = {}
            problem = None
            for i, (k, v) in enumerate(zip(header, texts, strict=False)):
                if not v:
                    continue
                if not k:
                    problem = (f"a value in column {i + 1}, which has no header name; name the "
                               "column or clear the cell", f"#{i + 1}")
                    continue
                cells[k] = v
            if problem:
                yield RawRow(record, cells, *problem)
            else:
                yield RawRow(record, cells)
