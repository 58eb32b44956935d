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
import difflib
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from pipeline.errors import SheetError
from pipeline.model import SheetDefaults
from pipeline.readers.common import CSV_FIELD_LIMIT, MAX_CELL_CHARS, RawRow, _duplicates, _quoted
from pipeline.readers.csv_rows import _csv_header, _csv_rows, _open_csv
from pipeline.readers.dialect import PLAIN, Dialect, numbers_with_commas
from pipeline.readers.parquet_rows import _open_parquet, _parquet_header, _parquet_rows
from pipeline.readers.xlsx_rows import _open_xlsx, _xlsx_header, _xlsx_rows, _xlsx_sheet
from pipeline.targets import user_columns

IDENTITY_PREFIX, IDENTITY_KEYS, MPID_COLUMN = user_columns()  # the user's columns

__all__ = ["CSV_FIELD_LIMIT", "EXPECT_PREFIX", "KNOWN_COLUMNS", "MAX_CELL_CHARS", "SET_PREFIX",
           "SUPPORTED_SUFFIXES", "RawRow", "check_columns", "columns", "fingerprint",
           "read_rows"]

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
#: `expect.<attr>`: a guard, the value the event must hold for the row to be sent.
EXPECT_PREFIX = "expect."

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


def columns(path: str | Path, sheet_name: str | None = None,
            dialect: Dialect = PLAIN) -> list[str]:
    """The sheet's header (column names, stripped), after the structural checks.

    Raises `SheetError` for a missing/unreadable file, an unsupported suffix, an empty file, a
    missing header or duplicate column names. Checks that depend on the command line (unknown
    or missing columns) are in `check_columns`.
    """
    path = Path(path)
    kind = _kind(path, sheet_name)
    if kind == "csv":
        with _open_csv(path, dialect) as f:
            reader = csv.reader(f, delimiter=dialect.delimiter, strict=True)
            header, _, _ = _csv_header(reader, path, dialect)
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
    path: str | Path, *, batch_size: int = 5000, sheet_name: str | None = None,
    dialect: Dialect = PLAIN,
) -> Iterator[list[RawRow]]:
    """Yield the sheet's non-blank data rows in lists of at most `batch_size`.

    Raises `SheetError` (on the first `next`) for file-level problems; see the module docstring.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    path = Path(path)
    kind = _kind(path, sheet_name)
    if kind == "csv":
        rows = _csv_rows(path, dialect)
    elif kind == "parquet":
        rows = _parquet_rows(path, batch_size)
    else:
        rows = _xlsx_rows(path, sheet_name)
    rows = numbers_with_commas(rows, dialect)
    batch: list[RawRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


# --------------------------------------------------------------------------- helpers


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


def _allowed(col: str, match: str | None) -> bool:
    if col in _KNOWN or col == match:
        return True
    if col.startswith(IDENTITY_PREFIX) or col == MPID_COLUMN:  # the user
        return col == MPID_COLUMN or col[len(IDENTITY_PREFIX):] in IDENTITY_KEYS
    if col.startswith(EXPECT_PREFIX):
        return len(col) > len(EXPECT_PREFIX)
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
            hints.append("the header looks separated by ';' or tabs; pass --delimiter ';' "
                         "(or --delimiter tab)")
        elif (guess := _did_you_mean(col, match)) is not None:
            hints.append(f"did you mean {guess!r} instead of {col!r}?")
    hints.append("to write an attribute name the column set.<name> (e.g. set.final_price)")
    if not match:
        hints.append("to look events up by a column's values pass --match <column>")
    return (f"{msg} Allowed columns: {', '.join(KNOWN_COLUMNS)}, set.<attribute>, "
            "expect.<attribute>, identity.<key>, mpid (the mParticle user)"
            + (f" and {match!r} (--match)" if match else "") + ". Hint: " + "; ".join(hints)
            + ".")


def _did_you_mean(col: str, match: str | None) -> str | None:
    """The known column a typo most likely meant (`lookup_vale` → `lookup_value`)."""
    for sep in ("set_", "set-", "set:", "set "):
        if col.startswith(sep) and len(col) > len(sep):
            return SET_PREFIX + col[len(sep):]
    known = [*KNOWN_COLUMNS, *([match] if match else [])]
    close = difflib.get_close_matches(col, known, n=1, cutoff=0.75)
    return close[0] if close else None
