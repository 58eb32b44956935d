"""CSV sheets: every cell is text, exactly as written; broken rows become problems."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import SheetError
from pipeline.readers.common import (
    _UNREADABLE_ROW_HINT,
    CSV_FIELD_LIMIT,
    MAX_CELL_CHARS,
    RawRow,
    _bad_bytes,
    _check_header,
    _sanitize,
)
from pipeline.readers.dialect import PLAIN, Dialect
from pipeline.readers.limits import BoundedLines


def _open_csv(path: Path, dialect: Dialect = PLAIN):
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise SheetError(f"{path}: cannot read the sheet ({exc.strerror or exc})") from None
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) and not dialect.encoding.startswith(
            "utf-16"):
        raise SheetError(f"{path}: the file is UTF-16; save it as CSV UTF-8 or pass "
                         "--encoding utf-16")
    if head.startswith(b"PK\x03\x04"):
        raise SheetError(f"{path}: this looks like an Excel workbook, not CSV text; name it "
                         ".xlsx or export it as CSV UTF-8")
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        # lines read with a bound: a huge line is reported, never held whole
        return BoundedLines(open(path, encoding=dialect.python_encoding,
                                 errors="surrogateescape", newline=""), path,
                            dialect.delimiter)
    except OSError as exc:
        raise SheetError(f"{path}: cannot read the sheet ({exc.strerror or exc})") from None


def _csv_header(reader, path: Path, dialect: Dialect = PLAIN) -> tuple[list[str], int, int]:
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
    _separator_hint(header, path, dialect)
    joined = "".join(header)
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:
        raise SheetError(f"{path}: the header row is not valid UTF-8 (bytes "
                         f"{_bad_bytes(joined)}); save the file as CSV UTF-8") from None
    _check_header(header, path)
    return header, record, reader.line_num


def _separator_hint(header: list[str], path: Path, dialect: Dialect) -> None:
    """A header read as one column that holds another separator: say which to pass."""
    if len([h for h in header if h]) != 1:
        return
    for sep, name in ((";", ";"), ("\t", "tab"), ("|", "|")):
        if sep != dialect.delimiter and sep in header[0]:
            raise SheetError(
                f"{path}: the header is a single column {header[0][:80]!r}: the sheet looks "
                f"separated by {name!r}, not {dialect.delimiter!r}; pass --delimiter "
                f"'{name}' (common in exports from European locales)")


def _csv_rows(path: Path, dialect: Dialect = PLAIN) -> Iterator[RawRow]:
    with _open_csv(path, dialect) as f:
        reader = csv.reader(f, delimiter=dialect.delimiter, strict=True)
        header, record, prev_line = _csv_header(reader, path, dialect)
        f.header_read = True
        width = len(header)
        unnamed = [i for i, h in enumerate(header) if not h]
        while True:
            record += 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                if f.problem:  # a line too long or too wide: that is the row's problem
                    prev_line = reader.line_num
                    yield RawRow(record, {}, f.problem)
                    f.problem = None
                    continue
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
            if f.problem:
                yield RawRow(record, {}, f.problem)
                f.problem = None
                continue
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
