"""The audit report: written from the checkpoint, streamed, and swapped in atomically.

The report always covers the whole (latest) sheet, whatever this run did, because it is read
from the checkpoint rather than collected in memory. It is written to a temporary file beside
the target and renamed, so a crash never leaves a truncated report.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import pyarrow as pa

from pipeline.checkpoint_schema import REPORT_COLUMNS
from pipeline.errors import UsageError
from pipeline.private_files import refuse_symlink
from pipeline.storage import is_remote, remote_name, upload
from pipeline.targets import report_columns
from pipeline.textsafe import needs_neutralising, neutralise_cell

COLUMNS = REPORT_COLUMNS
#: With several targets: one line per (row, event, target), saying whose it is, plus each
#: target's own ids. With the primary target alone the report keeps exactly `COLUMNS`.
TARGET_COLUMNS = COLUMNS[:2] + ("target",) + COLUMNS[2:] + report_columns()
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl"}
_INT_COLUMNS = {"row_number", "http_status", "attempts"}
#: Line ends of the CSV report. A `\r` in the terminator makes every csv module quote a cell
#: holding a lone carriage return (before Python 3.11.9 it did not with `\n` alone, and a
#: spreadsheet started a new row there).
_CSV_LINE_END = "\r\n"


def _schema(columns: tuple[str, ...]) -> pa.Schema:
    import pyarrow as pa  # only Parquet reports need it: keeps start-up short

    return pa.schema([(c, pa.int64() if c in _INT_COLUMNS else pa.string()) for c in columns])


def report_format(path: Path | str) -> str:
    suffix = Path(str(path)).suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(
            f"report {path}: unknown suffix {suffix!r}; use .csv, .parquet or .jsonl"
        )
    if not is_remote(path):
        check_destination(path)
        refuse_symlink(Path(path), "report", UsageError)
    return FORMATS[suffix]


def check_destination(path: Path | str) -> None:
    """Refuse, before anything is sent, a report path that cannot be written: its folder is
    a file, it names a folder, or the nearest existing folder is not writable."""
    if is_remote(path):
        return
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"cannot write the report at {target}: it is a directory; "
                         "give a file name with --report")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"cannot write the report at {target}: {parent} is a file, not a "
                         "directory; choose another --report")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write the report at {target}: {parent} is not writable; "
                         "choose another --report")


def neutralise(value: str) -> str:
    """Keep a spreadsheet from running a cell as a formula (`=HYPERLINK(...)`)."""
    return neutralise_cell(value)


@contextmanager
def _atomic(path: Path, mode: str) -> Iterator[Any]:
    path.parent.mkdir(parents=True, exist_ok=True)
    refuse_symlink(path, "report", UsageError)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if mode == "binary":
            yield Path(tmp)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(rows: Iterable[Mapping[str, Any] | tuple[Any, ...]], path: Path | str,
                 batch_size: int = 10_000, columns: tuple[str, ...] = COLUMNS, *,
                 csv_ready: bool = False) -> int:
    """Write report lines to `path` (format by suffix; `s3://` too). Returns the line count.

    Lines are mappings, or tuples in `columns` order. `csv_ready`: tuples whose text is
    already neutralised (`Checkpoint.report_tuples(for_csv=True)`), written as they come.
    """
    if is_remote(path):
        with tempfile.TemporaryDirectory(prefix="corrections-report-") as tmp:
            local = Path(tmp) / remote_name(str(path))
            n = write_report(rows, local, batch_size, columns, csv_ready=csv_ready)
            upload(local, str(path))
            return n
    path = Path(path)
    fmt = report_format(path)
    if fmt == "csv" and csv_ready:
        with _atomic(path, "text") as fh:
            counted = _Counted(rows)
            writer = csv.writer(fh, lineterminator=_CSV_LINE_END)
            writer.writerow(columns)
            writer.writerows(counted)
            return counted.n
    if fmt == "csv":
        with _atomic(path, "text") as fh:
            return _write_csv(rows, fh, columns)
    mappings = _as_mappings(rows, columns)
    if fmt == "jsonl":
        with _atomic(path, "text") as fh:
            return _write_jsonl(mappings, fh, columns)
    with _atomic(path, "binary") as tmp:
        return _write_parquet(mappings, tmp, batch_size, columns)


class _Counted:
    """An iterable that counts what passes through it (for C-speed `writerows`)."""

    def __init__(self, items: Iterable[Any]) -> None:
        self._items = items
        self.n = 0

    def __iter__(self) -> Iterator[Any]:
        for item in self._items:
            self.n += 1
            yield item


def _as_mappings(rows: Iterable[Mapping[str, Any] | tuple[Any, ...]],
                 columns: tuple[str, ...]) -> Iterator[Mapping[str, Any]]:
    for row in rows:
        yield dict(zip(columns, row, strict=True)) if isinstance(row, tuple) else row


def _write_csv(rows: Iterable[Mapping[str, Any] | tuple[Any, ...]], fh: TextIO,
               columns: tuple[str, ...] = COLUMNS) -> int:
    """CSV with formula-looking text neutralised, in every column (any may carry sheet text)."""
    writer = csv.writer(fh, lineterminator=_CSV_LINE_END)
    writer.writerow(columns)
    n = 0
    for row in rows:
        values = list(row) if isinstance(row, tuple) else [row.get(c) for c in columns]
        for i, v in enumerate(values):
            if v.__class__ is str and needs_neutralising(v):
                values[i] = neutralise_cell(v)
        writer.writerow(values)
        n += 1
    return n


def _write_jsonl(rows: Iterable[Mapping[str, Any]], fh: TextIO,
                 columns: tuple[str, ...] = COLUMNS) -> int:
    n = 0
    for row in rows:
        out = {c: row.get(c) for c in columns}
        for c in ("attributes_before", "attributes_after"):
            value = out[c]
            if isinstance(value, str):
                out[c] = json.loads(value)
        fh.write(json.dumps(out, ensure_ascii=False, default=str) + "\n")
        n += 1
    return n


def _write_parquet(rows: Iterable[Mapping[str, Any]], tmp: Path, batch_size: int,
                   columns: tuple[str, ...] = COLUMNS) -> int:
    n = 0
    import pyarrow.parquet as pq

    schema = _schema(columns)
    with pq.ParquetWriter(tmp, schema) as writer:
        batch: list[Mapping[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= batch_size:
                writer.write_table(_table(batch, schema))
                n += len(batch)
                batch = []
        if batch or n == 0:
            writer.write_table(_table(batch, schema))
            n += len(batch)
    return n


def _table(batch: list[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    import pyarrow as pa

    cols = {}
    for c in schema.names:
        values = [r.get(c) for r in batch]
        if c not in _INT_COLUMNS:
            values = [None if v is None else str(v) for v in values]
        cols[c] = values
    return pa.table(cols, schema=schema)
