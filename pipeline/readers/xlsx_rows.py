"""Excel (.xlsx) sheets via calamine: cells keep their type, as Parquet columns do.

A number cell is a JSON number (whole numbers without `.0`), a boolean a boolean, a date or time
ISO 8601 text. What Excel *shows* (`149.90`, `00123`) is formatting, not the value: a column that
must keep such text is formatted as Text in Excel.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from pipeline.errors import SheetError
from pipeline.readers.common import (
    RawRow,
    _check_header,
    _quoted,
)
from pipeline.readers.limits import check_xlsx


def _open_xlsx(path: Path):
    from python_calamine import CalamineError, CalamineWorkbook

    check_xlsx(path)  # before calamine expands it: zip bombs, a grid of billions of cells
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


def _xlsx_value(v: Any) -> Any:
    """An Excel cell as its typed value (None or "" = empty); dates stay dates for validation."""
    if isinstance(v, bool | str | datetime | date | time) or v is None:
        return v
    if isinstance(v, float):
        if math.isfinite(v) and v.is_integer() and abs(v) < _XLSX_INT_LIMIT:
            return int(v)
        return v
    if isinstance(v, int):
        return v
    return str(v)  # durations and anything newer: their text


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
            texts = [_xlsx_value(v) for v in row]
            if all(v is None or v == "" for v in texts):
                continue
            if len(texts) > width and any(_given(v) for v in texts[width:]):
                extra = next(i for i in range(width, len(texts)) if _given(texts[i]))
                cells = {k: v for k, v in zip(header, texts, strict=False) if _given(v) and k}
                yield RawRow(record, cells, f"a value in column {extra + 1}, which has no header "
                             "name; name the column or clear the cell", f"#{extra + 1}")
                continue
            cells = {}
            problem = None
            for i, (k, v) in enumerate(zip(header, texts, strict=False)):
                if not _given(v):
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


def _given(v: Any) -> bool:
    """A cell that holds something: 0 and FALSE do, None and "" do not."""
    return v is not None and v != ""
