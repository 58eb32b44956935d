"""Offline validation: one sheet row in, one `Correction` or `RowProblem` out.

Rules (each problem names the row, the column and what to do):

* A row with an `event_id` is a direct correction: the id must be a UUID (any case, braces or no
  hyphens accepted; normalised to lower-case `8-4-4-4-12`), and `timestamp` (or, failing that,
  `event_time`) must give a time in the event's calendar month. When `event_id` is given, the
  lookup columns (`lookup_key`, `lookup_value`, the `--match` column, the window) are ignored:
  **event_id wins**. `event_type` is optional there (kept for the report; `--event-type` is not
  applied), but a system event type is still refused.
* A row without `event_id` is looked up: event type from the cell or `--event-type`;
  `lookup_key` + `lookup_value` cells, or `--match ATTR` (key ATTR, value from column ATTR). The
  value becomes text (whole numbers without `.0`, other floats via `repr`, booleans
  `true`/`false`). Window: `from_timestamp`/`to_timestamp` cells (a missing end is taken from
  `--from`/`--to`), else `event_time`'s UTC calendar month, else `--from`/`--to`. A bare date in
  `to_timestamp` means the end of that day. `from > to` is a problem.
* Attributes: `set.<attr>` cells (CSV/XLSX text stays text, Parquet types stay) and/or
  `event_attributes` (a JSON object). The same key in both with a different value, nothing to
  set (an empty object too — `replace` with `{}` would wipe an event), NaN/Infinity, and more
  than 10240 bytes of compact UTF-8 JSON are problems. Parquet timestamps in `set.*` become
  ISO 8601 UTC text.
* `merge_mode` (cell, any case, or `--merge-mode`) is `merge` or `replace`; `idempotency_key`
  is 1–64 printable ASCII characters without spaces.
* Structural cells (ids, times, types, keys, modes) are stripped of surrounding whitespace;
  attribute values and lookup values are kept exactly. Formula-looking text is just text.
* The user (`identity.<key>`, `mpid`: `pipeline.targets.user_columns`) is stripped text,
  checked per target; it joins the row key only when present, with the row's `event_time`.
* Row key: `keys.row_key` of the effective, normalised correction (defaults applied, times in
  UTC ISO form with milliseconds), so it depends on content only. A problem row's key hashes its
  raw cells; a row that could not be parsed at all (no cells) hashes its number and problem.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.guards import Guard
from pipeline.keys import row_key
from pipeline.model import MERGE_MODES, Correction, RowProblem, SheetDefaults, Window
from pipeline.readers.dialect import PLAIN, Dialect
from pipeline.sheet import EXPECT_PREFIX, RawRow, check_columns, columns, read_rows
from pipeline.targets import user_columns
from pipeline.timeutil import month_window, parse_timestamp
from pipeline.validate_values import (
    _EXAMPLE_TIME,
    CellError,
    _attributes,
    _cell_time,
    _iso,
    _safe,
    _show,
    _text,
    _uuid,
    expected_values,
)
from pipeline.validate_values import (
    MAX_ATTRIBUTES_BYTES as MAX_ATTRIBUTES_BYTES,  # re-exported: part of the sheet contract
)

IDENTITY_PREFIX, _, MPID_COLUMN = user_columns()  # the user's columns in a sheet
_PREFIX_LEN = len(IDENTITY_PREFIX)

MAX_IDEMPOTENCY_KEY = 64
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,64}")
_MERGE_CELLS = {"merge": "merge", "replace": "replace"}
#: Event types the API refuses to mutate (besides every `$`-prefixed one).
SYSTEM_EVENT_TYPES = frozenset({"pageview", "user_identify", "group", "lead"})

_MONTH_CACHE: dict[tuple[int, int], tuple[Window, tuple[str, str]]] = {}


@dataclass(frozen=True)
class _Prepared:
    event_type: str | None
    match: str | None
    from_: tuple[datetime, str] | None
    to: tuple[datetime, str] | None
    merge_mode: str
    size_limit: bool = True  # Usermaven's 10 KB: only when Usermaven is a target


def _default_time(value: datetime | None) -> tuple[datetime, str] | None:
    if value is None:
        return None
    dt = parse_timestamp(value)
    return dt, _iso(dt)


@lru_cache(maxsize=32)
def _prepare(defaults: SheetDefaults) -> _Prepared:
    return _Prepared(
        event_type=(defaults.event_type or "").strip() or None,
        match=defaults.match or None,
        from_=_default_time(defaults.from_),
        to=_default_time(defaults.to),
        merge_mode=(defaults.merge_mode or "merge").strip().lower(),
    )


# --------------------------------------------------------------------------- public API


def validate(raw: RawRow, defaults: SheetDefaults) -> Correction | RowProblem:
    """Check one row and apply the command-line defaults; see the module docstring."""
    return _validate(raw, _prepare(defaults))


def validate_batches(
    path: str | Path,
    defaults: SheetDefaults,
    *,
    batch_size: int = 5000,
    sheet_name: str | None = None,
    dialect: Dialect = PLAIN,
    usermaven: bool = True,
) -> Iterator[list[Correction | RowProblem]]:
    """Check the header now (raising `SheetError`), then validate the sheet batch by batch.

    `usermaven`: whether Usermaven is a target; its 10 KB attribute limit applies only then
    (mParticle's own limits are checked by its target).

    Reading can still raise `SheetError` later for damage that makes the rest of a CSV file
    untrustworthy (a quoted cell that never closes across many lines).
    """
    cols = columns(path, sheet_name, dialect)
    check_columns(cols, defaults, source=path)
    prepared = _prepare(defaults)
    if not usermaven:
        prepared = replace(prepared, size_limit=False)
    return _batches(path, prepared, batch_size, sheet_name, dialect)


def _batches(path, prepared, batch_size, sheet_name,
             dialect: Dialect) -> Iterator[list[Correction | RowProblem]]:
    for batch in read_rows(path, batch_size=batch_size, sheet_name=sheet_name, dialect=dialect):
        yield [_validate(raw, prepared) for raw in batch]


def is_system_event_type(event_type: str) -> bool:
    """True for event types the API refuses to mutate (422)."""
    return event_type.startswith("$") or event_type in SYSTEM_EVENT_TYPES


# --------------------------------------------------------------------------- the rules


def _validate(raw: RawRow, p: _Prepared) -> Correction | RowProblem:
    if raw.problem is not None:
        return RowProblem(raw.row_number, _problem_key(raw), raw.column, raw.problem,
                          raw.cells)
    try:
        return _correction(raw, p)
    except CellError as exc:
        return RowProblem(raw.row_number, _problem_key(raw), exc.column, exc.message, raw.cells)


def _correction(raw: RawRow, p: _Prepared) -> Correction:
    cells = raw.cells
    get = cells.get
    event_id = get("event_id")
    if event_id is not None:
        event_id = _structural(event_id)
    if event_id is not None:
        eid = _uuid(event_id)
        ts = _cell_time(get("timestamp"), "timestamp")
        if ts is None:
            ts = _cell_time(get("event_time"), "event_time")
        if ts is None:
            raise CellError("timestamp", "a row with event_id needs a timestamp: a time in the "
                           f"event's calendar month, e.g. {_EXAMPLE_TIME} (the API requires it)")
        event_type = get("event_type")
        if event_type is not None:
            event_type = _structural(event_type)
            if event_type is not None:
                _check_event_type(event_type, "event_type")
        attrs = _attributes(cells, p.size_limit)
        for col in cells:
            if col[:7] == EXPECT_PREFIX:
                raise CellError(col, "a guard (expect.<attribute>) needs the event's current "
                               "state, which only a lookup reads; look the event up instead of "
                               "naming event_id (lookup_key/lookup_value or --match), or drop "
                               "the guard")
        merge_mode = _merge_mode(get("merge_mode"), p)
        key = get("idempotency_key")
        if key is not None:
            key = _idempotency_key(key)
        content: dict[str, Any] = {
            "event_id": eid,
            "timestamp": ts[1],
            "event_type": event_type,
            "lookup_key": None,
            "lookup_value": None,
            "window": None,
            "attributes": attrs,
            "merge_mode": merge_mode,
            "idempotency_key": key,
        }
        identities, mpid = _user(cells)
        if identities or mpid is not None:  # only then: keys of other sheets stay as they were
            content["user"] = {"identities": identities, "mpid": mpid}
        return Correction(
            row_number=raw.row_number, row_key=row_key(content), attributes=attrs,
            merge_mode=merge_mode, event_type=event_type, event_id=eid, timestamp=ts[0],
            idempotency_key=key, identities=identities, mpid=mpid, event_time=ts[0],
        )

    event_type = get("event_type")
    if event_type is not None:
        event_type = _structural(event_type)
    type_column: str | None = "event_type"
    if event_type is None:
        event_type, type_column = p.event_type, None
    if event_type is None:
        raise CellError("event_type", "no event_id and no event type: give event_id (with "
                       "timestamp), or an event_type (the column or --event-type) to look the "
                       "event up by")
    _check_event_type(event_type, type_column)
    lookup_key, lookup_value = _lookup(cells, p)
    window, window_iso = _window(cells, p)
    attrs = _attributes(cells, p.size_limit)
    merge_mode = _merge_mode(get("merge_mode"), p)
    key = get("idempotency_key")
    if key is not None:
        key = _idempotency_key(key)
    content = {
        "event_id": None,
        "timestamp": None,
        "event_type": event_type,
        "lookup_key": lookup_key,
        "lookup_value": lookup_value,
        "window": window_iso,
        "attributes": attrs,
        "merge_mode": merge_mode,
        "idempotency_key": key,
    }
    expected = expected_values(cells)
    if expected:  # only then: keys of other sheets stay as they were
        content["expect"] = expected
    identities, mpid = _user(cells)
    event_time = None
    if identities or mpid is not None:  # only then: keys of other sheets stay as they were
        event_time = _cell_time(get("event_time"), "event_time")
        content["user"] = {"identities": identities, "mpid": mpid,
                           "event_time": event_time[1] if event_time else None}
    return Correction(
        row_number=raw.row_number, row_key=row_key(content), attributes=attrs,
        merge_mode=merge_mode, event_type=event_type, lookup_key=lookup_key,
        lookup_value=lookup_value, window=window, idempotency_key=key,
        identities=identities, mpid=mpid, event_time=event_time[0] if event_time else None,
        guard=Guard(expected) if expected else None,
    )


def _user(cells: Mapping[str, Any]) -> tuple[dict[str, str], str | None]:
    """The mParticle user: `identity.<key>` cells (stripped text) and the `mpid` cell."""
    identities: dict[str, str] = {}
    for col, value in cells.items():
        if col[:_PREFIX_LEN] == IDENTITY_PREFIX:
            text = _structural(value)
            if text is not None:
                identities[col[_PREFIX_LEN:]] = text
    return identities, _structural(cells.get(MPID_COLUMN))


def _structural(value: Any) -> str | None:
    """An identifier-like cell as stripped text; None when empty."""
    if value is None:
        return None
    if not isinstance(value, str):
        value = _text(value)
    return value.strip() or None












def _check_event_type(event_type: str, column: str | None) -> None:
    if is_system_event_type(event_type):
        where = "" if column else " (from --event-type)"
        raise CellError(column, f"{event_type!r}{where} is a system event type; the API refuses "
                       "to mutate system events (422): $-prefixed types, pageview, "
                       "user_identify, group and lead cannot be corrected")


def _lookup(cells: Mapping[str, Any], p: _Prepared) -> tuple[str, str]:
    key = _structural(cells.get("lookup_key"))
    if key is not None:
        value = cells.get("lookup_value")
        if value is None:
            raise CellError("lookup_value", f"lookup_key {key!r} needs a lookup_value: the value "
                           "of that attribute on the event to correct")
        return key, _text(value)
    if p.match is not None:
        value = cells.get(p.match)
        if value is None:
            raise CellError(p.match, f"no value in column {p.match!r} (--match {p.match}): give "
                           "the value to look the event up by, or an event_id")
        return p.match, _text(value)
    if cells.get("lookup_value") is not None:
        raise CellError("lookup_key", "lookup_value is given but lookup_key is not: give the "
                       "attribute name in lookup_key (or pass --match)")
    raise CellError("lookup_key", "no event_id and no lookup: give event_id (with timestamp), or "
                   "lookup_key + lookup_value, or pass --match <column>")


def _month(dt: datetime) -> tuple[Window, tuple[str, str]]:
    key = (dt.year, dt.month)
    cached = _MONTH_CACHE.get(key)
    if cached is None:
        start, end = month_window(dt)
        cached = _MONTH_CACHE[key] = (Window(start, end), (_iso(start), _iso(end)))
    return cached


def _window(cells: Mapping[str, Any], p: _Prepared) -> tuple[Window, tuple[str, str]]:
    start = _cell_time(cells.get("from_timestamp"), "from_timestamp")
    end = _cell_time(cells.get("to_timestamp"), "to_timestamp", end_of_day=True)
    event_time = _cell_time(cells.get("event_time"), "event_time")
    column: str | None = "from_timestamp"
    if start is not None or end is not None:
        if start is None:
            start = p.from_
            if start is None:
                raise CellError("from_timestamp", "to_timestamp is given but from_timestamp is "
                               "not: give from_timestamp (or --from)")
        if end is None:
            end = p.to
            if end is None:
                raise CellError("to_timestamp", "from_timestamp is given but to_timestamp is "
                               "not: give to_timestamp (or --to)")
    elif event_time is not None:
        try:
            return _month(event_time[0])
        except (ValueError, OverflowError):
            raise CellError("event_time", "the month of event_time is out of range; give a "
                           "real time") from None
    elif p.from_ is not None and p.to is not None:
        start, end = p.from_, p.to
        column = None
    else:
        raise CellError("from_timestamp", "no lookup window: give from_timestamp/to_timestamp, "
                       "event_time or --from/--to")
    if start[0] > end[0]:
        where = "" if column else " (--from/--to)"
        raise CellError(column, f"the window starts after it ends{where}: from {start[1]} > "
                       f"to {end[1]}; swap or fix the times")
    return Window(start[0], end[0]), (start[1], end[1])

def _merge_mode(value: Any, p: _Prepared) -> str:
    if value is None:
        if p.merge_mode in _MERGE_CELLS:
            return p.merge_mode
    else:
        known = _MERGE_CELLS.get(value)
        if known is not None:
            return known
    text = _structural(value)
    if text is None:
        if p.merge_mode not in MERGE_MODES:
            raise CellError(None, f"--merge-mode {p.merge_mode!r} must be merge or replace")
        return p.merge_mode
    mode = text.lower()
    if mode not in MERGE_MODES:
        raise CellError("merge_mode", f"{_show(text)} is not a merge mode; write merge (update "
                       "the given attributes) or replace (replace all attributes)")
    return mode


def _idempotency_key(value: Any) -> str | None:
    text = _structural(value)
    if text is None:
        return None
    if _IDEMPOTENCY_KEY.fullmatch(text):
        return text
    if len(text) > MAX_IDEMPOTENCY_KEY:
        why = f"is {len(text)} characters long"
    else:
        why = "contains a space or a character outside printable ASCII"
    raise CellError("idempotency_key", f"{_show(text)} {why}; an idempotency key is 1–64 "
                   "printable ASCII characters without spaces (or leave it empty to derive one)")


def _problem_key(raw: RawRow) -> str:
    if not raw.cells:
        return row_key({"unreadable_row": raw.row_number, "problem": raw.problem or ""})
    return row_key({"invalid": {k: _safe(v) for k, v in raw.cells.items()}})

