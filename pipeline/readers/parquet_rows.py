"""Parquet sheets: types kept, streamed batch by batch."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.errors import SheetError
from pipeline.readers.common import (
    MAX_CELL_CHARS,
    RawRow,
    _check_header,
)
from pipeline.readers.limits import check_parquet


def _open_parquet(path: Path):
    """The file, checked against the limits first; text columns keep their dictionaries
    (a value repeated on many rows is decoded once, not once per row)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as probe:
            check_parquet(probe, path)
            schema = probe.schema_arrow
        text = [f.name for f in schema
                if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        return pq.ParquetFile(path, read_dictionary=text)
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
    if pt.is_dictionary(typ) and (pt.is_string(typ.value_type)
                                  or pt.is_large_string(typ.value_type)):
        entries = _text_values(arr.dictionary)
        values = [None if i is None else entries[i] for i in arr.indices.to_pylist()]
        return values, any(isinstance(v, _Bad) for v in entries)
    if pt.is_dictionary(typ):
        arr = arr.dictionary_decode()
        typ = arr.type
    if pt.is_string(typ) or pt.is_large_string(typ):
        values = _text_values(arr)
        return values, any(isinstance(v, _Bad) for v in values)
    if pt.is_integer(typ) or pt.is_boolean(typ):
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


def _text_values(arr) -> list[Any]:
    """Strings as Python text; a cell over the size limit becomes `_Bad` without being copied.

    An empty string means "not given" (None), as an empty CSV or Excel cell does.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    lengths = pc.utf8_length(arr)
    longest = pc.max(lengths).as_py()
    if longest is None or longest <= MAX_CELL_CHARS:
        return [None if v == "" else v for v in arr.to_pylist()]
    too_long = pc.greater(lengths, MAX_CELL_CHARS)
    values = [None if v == "" else v
              for v in pc.if_else(too_long, pa.scalar(None, arr.type), arr).to_pylist()]
    for i, (bad, n) in enumerate(zip(too_long.to_pylist(), lengths.to_pylist(), strict=True)):
        if bad:
            values[i] = _Bad(f"holds {n} characters, over the {MAX_CELL_CHARS} limit; "
                             "shorten it")
    return values


def _parquet_rows(path: Path, batch_size: int) -> Iterator[RawRow]:
    import pyarrow as pa

    pf = _open_parquet(path)
    with pf:
        batch_size = min(batch_size, check_parquet(pf, path))
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
