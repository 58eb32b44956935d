"""Size and width limits checked before a sheet is decoded, so no input can exhaust memory.

A few kilobytes of Parquet or Excel can expand to gigabytes (compression, dictionary pages,
run-length encoded lists, a cell at the far corner of the grid), and one CSV line can be
hundreds of megabytes. Each reader checks what its format declares (zip directory, Parquet
metadata, cell references) or reads with a bound, and refuses with the file, the limit and
what to do; a run then stays within a few hundred megabytes whatever it is given.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pipeline.errors import SheetError

if TYPE_CHECKING:
    import zipfile

#: Widest header accepted (a correction sheet has a handful of columns; Excel allows 16 384).
MAX_COLUMNS = 1024
#: Longest CSV line read, in characters: a longer one is reported and skipped, never held.
MAX_LINE_CHARS = 8 << 20
#: Most separators in one CSV line (a row that wide is broken, whatever its quotes).
MAX_SEPARATORS = 100_000
#: Largest Parquet column chunk, uncompressed, per row group.
PARQUET_MAX_CHUNK_BYTES = 64 << 20
#: List items a Parquet row group may hold beyond one value per cell.
PARQUET_MAX_EXTRA_VALUES = 1_000_000
#: Arrow data decoded at once from a Parquet file (the batch shrinks to stay near it).
PARQUET_BATCH_BYTES = 16 << 20
#: Largest .xlsx part, uncompressed, and the highest compression ratio of a large part.
XLSX_MAX_PART_BYTES = 64 << 20
XLSX_MAX_TOTAL_BYTES = 128 << 20
XLSX_MAX_RATIO = 100
#: Cells of the grid a worksheet spans (Excel readers allocate the whole rectangle).
XLSX_MAX_CELLS = 5_000_000

_MIB = 1 << 20


def too_wide(path: Path, width: int) -> SheetError:
    return SheetError(
        f"{path}: the header has more than {MAX_COLUMNS} columns (at least {width}); the "
        f"limit is {MAX_COLUMNS}. Keep only the columns the corrections need (event_id, timestamp, "
        "lookup columns, set.<attribute> ...)")


class BoundedLines:
    """The lines of a CSV text file for `csv.reader`, none longer than `MAX_LINE_CHARS`.

    A longer line (or one with more than `MAX_SEPARATORS` separators) is read through in
    pieces and discarded; the reader gets an empty line in its place and `problem` says why.
    Before the header is read such a line is a sheet error.
    """

    def __init__(self, fh: TextIO, path: Path, delimiter: str = ",") -> None:
        self._fh = fh
        self._path = path
        self._delimiter = delimiter
        self.header_read = False
        self.problem: str | None = None

    def __enter__(self) -> BoundedLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def close(self) -> None:
        self._fh.close()

    def __iter__(self) -> BoundedLines:
        return self

    def __next__(self) -> str:
        line = self._fh.readline(MAX_LINE_CHARS + 1)
        if not line:
            raise StopIteration
        overlong = len(line) > MAX_LINE_CHARS and not line.endswith(("\n", "\r"))
        if overlong:
            self._skip_rest()
        separators = line.count(self._delimiter)
        if separators > MAX_SEPARATORS:
            if not self.header_read:
                raise too_wide(self._path, separators + 1)
            return self._refuse(f"the line has more than {MAX_SEPARATORS} separators (a sheet "
                                f"has at most {MAX_COLUMNS} columns): fix or remove the row")
        if overlong:
            return self._refuse(f"the line is longer than {MAX_LINE_CHARS // _MIB} MiB (the "
                                "limit); a correction row is far shorter: fix or remove it")
        return line

    def _skip_rest(self) -> None:
        while True:
            piece = self._fh.readline(_MIB)
            if not piece or piece.endswith(("\n", "\r")):
                return

    def _refuse(self, why: str) -> str:
        if not self.header_read:
            raise SheetError(f"{self._path}: the header row: {why}")
        self.problem = why
        return "\n"


def check_parquet(pf: Any, path: Path) -> int:
    """Refuse a Parquet file whose metadata promises too much; the rows to decode at once."""
    meta = pf.metadata
    if meta.num_columns > MAX_COLUMNS:
        raise SheetError(
            f"{path}: the file has {meta.num_columns} (leaf) columns; the limit is "
            f"{MAX_COLUMNS}. Keep only the columns the corrections need")
    rows = 1 << 30
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        extra = 0
        total = 0
        for c in range(group.num_columns):
            col = group.column(c)
            size = col.total_uncompressed_size
            total += size
            if size > PARQUET_MAX_CHUNK_BYTES:
                raise SheetError(
                    f"{path}: column {col.path_in_schema!r} of row group {g} expands to "
                    f"{size // _MIB} MiB; the limit is {PARQUET_MAX_CHUNK_BYTES // _MIB} MiB per "
                    "column and row group. Write smaller row groups (e.g. row_group_size="
                    "100000) and keep cells short")
            extra += max(0, col.num_values - group.num_rows)
        if extra > PARQUET_MAX_EXTRA_VALUES:
            raise SheetError(
                f"{path}: row group {g} holds {extra} list items; the limit is "
                f"{PARQUET_MAX_EXTRA_VALUES}. A correction needs a few attributes per row")
        if total and group.num_rows:
            rows = min(rows, max(1, PARQUET_BATCH_BYTES * group.num_rows // total))
    return rows


def check_xlsx(path: Path) -> None:
    """Refuse a workbook whose zip parts expand past the limits, or whose grid is too big."""
    import zipfile  # only an .xlsx sheet is a zip; CSV runs skip loading it

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise SheetError(f"{path}: not a readable .xlsx workbook ({exc}); check the file or "
                         "re-save it from Excel") from None
    with zf:
        infos = zf.infolist()
        total = sum(info.file_size for info in infos)
        if total > XLSX_MAX_TOTAL_BYTES:
            raise SheetError(
                f"{path}: the workbook expands to {total // _MIB} MiB; the limit is "
                f"{XLSX_MAX_TOTAL_BYTES // _MIB} MiB. Save a large sheet as CSV or Parquet")
        for info in infos:
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > XLSX_MAX_PART_BYTES or (
                    info.file_size > _MIB and ratio > XLSX_MAX_RATIO):
                raise SheetError(
                    f"{path}: the workbook part {info.filename} expands to "
                    f"{info.file_size // _MIB} MiB ({ratio:.0f}x); the limit is "
                    f"{XLSX_MAX_PART_BYTES // _MIB} MiB and {XLSX_MAX_RATIO}x per part. Save a "
                    "large sheet as CSV or Parquet")
        for info in infos:
            # every part is read through once: the sizes above are only what the zip
            # directory claims, and a part that expands past its claim fails its CRC here
            try:
                _check_extent(zf, info, path)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                raise SheetError(f"{path}: the workbook part {info.filename} is damaged "
                                 f"({exc}); re-save it from Excel") from None


_CELL_REF = re.compile(rb"<(?:\w+:)?c\b[^>]*?\br=\"([A-Z]{1,3})([0-9]{1,7})\"")
_ROW_REF = re.compile(rb"<(?:\w+:)?row\b[^>]*?\br=\"([0-9]{1,7})\"")


def _check_extent(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> None:
    """The rectangle a part's cell references span (worksheets may be named anything),
    read as a stream."""
    max_row = max_col = 0
    tail = b""
    with zf.open(info) as fh:
        while chunk := fh.read(_MIB):
            data = tail + chunk
            for m in _CELL_REF.finditer(data):
                max_col = max(max_col, _column_number(m.group(1)))
                max_row = max(max_row, int(m.group(2)))
            for m in _ROW_REF.finditer(data):
                max_row = max(max_row, int(m.group(1)))
            tail = data[-256:]
    if max_col > MAX_COLUMNS or max_row * max_col > XLSX_MAX_CELLS:
        raise SheetError(
            f"{path}: {info.filename} spans {max_row} rows x {max_col} columns; the limit is "
            f"{MAX_COLUMNS} columns and {XLSX_MAX_CELLS} cells. Clear the cells far outside the "
            "data (or save the sheet as CSV or Parquet)")


def _column_number(letters: bytes) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + ch - 64
    return n
