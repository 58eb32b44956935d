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
* mParticle user: `identity.<key>` cells and `mpid` are carried as stripped text (checked per
  target by `pipeline.targets.mparticle.mapping`, so a row without a user still suits
  Usermaven). They join the row key only when present, with the row's `event_time`.
* Row key: `keys.row_key` of the effective, normalised correction (defaults applied, times in
  UTC ISO form with milliseconds), so it depends on content only. A problem row's key hashes its
  raw cells; a row that could not be parsed at all (no cells) hashes its number and problem.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, time
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.guards import Guard
from pipeline.keys import canonical_json, row_key
from pipeline.model import MERGE_MODES, Correction, RowProblem, SheetDefaults, Window
from pipeline.readers.dialect import PLAIN, Dialect
from pipeline.sheet import EXPECT_PREFIX, SET_PREFIX, RawRow, check_columns, columns, read_rows
from pipeline.targets.mparticle.limits import IDENTITY_PREFIX, MPID_COLUMN
from pipeline.timeutil import TimestampError, month_window, parse_timestamp

#: Largest `event_attributes` the API accepts, as compact UTF-8 JSON.
MAX_ATTRIBUTES_BYTES = 10240
#: Event types the API refuses to mutate (besides every `$`-prefixed one).
SYSTEM_EVENT_TYPES = frozenset({"pageview", "user_identify", "group", "lead"})
MAX_IDEMPOTENCY_KEY = 64

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,64}")
_EXAMPLE_TIME = "2026-03-10T14:30:00Z"
_EXAMPLE_JSON = '{"final_price": "149.99"}'
_SET_COLUMNS = "set.*"
_TS_CACHE: dict[tuple[str, bool], tuple[datetime, str] | str] = {}
_DT_CACHE: dict[tuple[date, bool], tuple[datetime, str]] = {}
_TS_CACHE_MAX = 65536
_MONTH_CACHE: dict[tuple[int, int], tuple[Window, tuple[str, str]]] = {}
_MERGE_CELLS = {"merge": "merge", "replace": "replace"}
_BIG = MAX_ATTRIBUTES_BYTES  # forces the exact size check
_NUMBER_BOUND = 10**20
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class _Invalid(Exception):
    def __init__(self, column: str | None, message: str) -> None:
        super().__init__(message)
        self.column = column
        self.message = message


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
    except _Invalid as exc:
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
            raise _Invalid("timestamp", "a row with event_id needs a timestamp: a time in the "
                           f"event's calendar month, e.g. {_EXAMPLE_TIME} (the API requires it)")
        event_type = get("event_type")
        if event_type is not None:
            event_type = _structural(event_type)
            if event_type is not None:
                _check_event_type(event_type, "event_type")
        attrs = _attributes(cells, p.size_limit)
        for col in cells:
            if col[:7] == EXPECT_PREFIX:
                raise _Invalid(col, "a guard (expect.<attribute>) needs the event's current "
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
        raise _Invalid("event_type", "no event_id and no event type: give event_id (with "
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
    expected = _expected(cells)
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


def _expected(cells: Mapping[str, Any]) -> dict[str, Any]:
    """`expect.<attr>` cells: the values the event must hold now (typed like `set.*`)."""
    return {col[7:]: _attribute_value(value, col) for col, value in cells.items()
            if col[:7] == EXPECT_PREFIX}


def _user(cells: Mapping[str, Any]) -> tuple[dict[str, str], str | None]:
    """The mParticle user: `identity.<key>` cells (stripped text) and the `mpid` cell."""
    identities: dict[str, str] = {}
    for col, value in cells.items():
        if col[:9] == IDENTITY_PREFIX:
            text = _structural(value)
            if text is not None:
                identities[col[9:]] = text
    return identities, _structural(cells.get(MPID_COLUMN))


def _structural(value: Any) -> str | None:
    """An identifier-like cell as stripped text; None when empty."""
    if value is None:
        return None
    if not isinstance(value, str):
        value = _text(value)
    return value.strip() or None


def _text(value: Any) -> str:
    """A cell as text: Parquet numbers without a spurious `.0`, booleans `true`/`false`."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        return repr(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, dict | list):
        return canonical_json(value)
    return str(value)


def _uuid(text: str) -> str:
    low = text.lower()
    if len(low) == 36 and _UUID.fullmatch(low):
        return low
    try:
        return str(uuid.UUID(low))
    except ValueError:
        raise _Invalid("event_id", f"{_show(text)} is not a UUID; write the event's id like "
                       "550e8400-e29b-41d4-a716-446655440000") from None


def _time(text: str, column: str, *, end_of_day: bool = False) -> tuple[datetime, str]:
    """Parse timestamp text to (UTC datetime, ISO text), remembering recent answers."""
    cached = _TS_CACHE.get((text, end_of_day))
    if cached is None:
        try:
            dt = parse_timestamp(text, end_of_day=end_of_day)
            cached = (dt, _iso(dt))
        except (TimestampError, ValueError, OverflowError):
            cached = (f"{_show(text)} is not an ISO 8601 time; write e.g. {_EXAMPLE_TIME} "
                      "or 2026-03-10 (no zone means UTC)")
        if len(_TS_CACHE) >= _TS_CACHE_MAX:
            _TS_CACHE.clear()
        _TS_CACHE[(text, end_of_day)] = cached
    if isinstance(cached, str):
        raise _Invalid(column, cached)
    return cached


def _cell_time(
    value: Any, column: str, *, end_of_day: bool = False
) -> tuple[datetime, str] | None:
    """A timestamp cell as (UTC datetime, ISO text): Parquet datetimes as they are, text parsed."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        return _time(text, column, end_of_day=end_of_day) if text else None
    if isinstance(value, datetime | date):
        known = _DT_CACHE.get((value, end_of_day))
        if known is None:
            try:
                dt = parse_timestamp(value, end_of_day=end_of_day)
            except (TimestampError, ValueError, OverflowError):
                raise _Invalid(column, f"{value!r} is out of range; give a real time") from None
            known = (dt, _iso(dt))
            if len(_DT_CACHE) >= _TS_CACHE_MAX:
                _DT_CACHE.clear()
            _DT_CACHE[(value, end_of_day)] = known
        return known
    raise _Invalid(column, f"{_show(value)} is not a time; write e.g. {_EXAMPLE_TIME}")


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds")


def _check_event_type(event_type: str, column: str | None) -> None:
    if is_system_event_type(event_type):
        where = "" if column else " (from --event-type)"
        raise _Invalid(column, f"{event_type!r}{where} is a system event type; the API refuses "
                       "to mutate system events (422): $-prefixed types, pageview, "
                       "user_identify, group and lead cannot be corrected")


def _lookup(cells: Mapping[str, Any], p: _Prepared) -> tuple[str, str]:
    key = _structural(cells.get("lookup_key"))
    if key is not None:
        value = cells.get("lookup_value")
        if value is None:
            raise _Invalid("lookup_value", f"lookup_key {key!r} needs a lookup_value: the value "
                           "of that attribute on the event to correct")
        return key, _text(value)
    if p.match is not None:
        value = cells.get(p.match)
        if value is None:
            raise _Invalid(p.match, f"no value in column {p.match!r} (--match {p.match}): give "
                           "the value to look the event up by, or an event_id")
        return p.match, _text(value)
    if cells.get("lookup_value") is not None:
        raise _Invalid("lookup_key", "lookup_value is given but lookup_key is not: give the "
                       "attribute name in lookup_key (or pass --match)")
    raise _Invalid("lookup_key", "no event_id and no lookup: give event_id (with timestamp), or "
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
                raise _Invalid("from_timestamp", "to_timestamp is given but from_timestamp is "
                               "not: give from_timestamp (or --from)")
        if end is None:
            end = p.to
            if end is None:
                raise _Invalid("to_timestamp", "from_timestamp is given but to_timestamp is "
                               "not: give to_timestamp (or --to)")
    elif event_time is not None:
        try:
            return _month(event_time[0])
        except (ValueError, OverflowError):
            raise _Invalid("event_time", "the month of event_time is out of range; give a "
                           "real time") from None
    elif p.from_ is not None and p.to is not None:
        start, end = p.from_, p.to
        column = None
    else:
        raise _Invalid("from_timestamp", "no lookup window: give from_timestamp/to_timestamp, "
                       "event_time or --from/--to")
    if start[0] > end[0]:
        where = "" if column else " (--from/--to)"
        raise _Invalid(column, f"the window starts after it ends{where}: from {start[1]} > "
                       f"to {end[1]}; swap or fix the times")
    return Window(start[0], end[0]), (start[1], end[1])


def _reject_constant(name: str) -> Any:
    raise _Invalid("event_attributes", f"{name} is not a valid JSON value; write a number, a "
                   "string or null")


def _attributes(cells: Mapping[str, Any], size_limit: bool = True) -> dict[str, Any]:
    """The attributes to write, checked (JSON-safe; at most 10 KB as sent if `size_limit`)."""
    attrs: dict[str, Any] = {}
    column = _SET_COLUMNS
    given = cells.get("event_attributes")
    if given is None:  # the common case: set.* text cells only
        chars = 0
        for col, value in cells.items():
            if col[:4] == SET_PREFIX:
                if type(value) is str:
                    chars += len(col) + len(value)
                else:
                    value = _attribute_value(value, col)
                    if type(value) is str:
                        chars += len(col) + len(value)
                    elif -_NUMBER_BOUND < value < _NUMBER_BOUND:  # finite: repr < 32 chars
                        chars += len(col) + 32
                    else:
                        chars += _BIG
                attrs[col[4:]] = value
        if attrs:
            # every character costs at most 6 bytes (\u00XX), plus quotes, colon and comma
            if 6 * chars + 6 * len(attrs) + 2 > MAX_ATTRIBUTES_BYTES:
                _check_size(attrs, column, size_limit)
            return attrs
    if isinstance(given, str) and not given.strip():
        given = None
    if given is not None:
        column = "event_attributes"
        if isinstance(given, str):
            try:
                obj = json.loads(given, parse_constant=_reject_constant)
            except json.JSONDecodeError as exc:
                raise _Invalid("event_attributes", f"not valid JSON ({exc.msg} at character "
                               f"{exc.pos + 1}); write a JSON object like {_EXAMPLE_JSON}"
                               ) from None
            except RecursionError:
                raise _Invalid("event_attributes", "the JSON is nested too deeply; flatten "
                               "it") from None
        else:
            obj = given
        if not isinstance(obj, dict):
            raise _Invalid("event_attributes", f"must be a JSON object like {_EXAMPLE_JSON}, "
                           f"not {_json_kind(obj)}")
        attrs.update(obj)
    for col, value in cells.items():
        if not col.startswith(SET_PREFIX):
            continue
        name = col[4:]
        value = _attribute_value(value, col)
        if name in attrs and canonical_json(attrs[name]) != canonical_json(value):
            raise _Invalid(col, f"{col} = {_show(value)} conflicts with event_attributes "
                           f"{name!r} = {_show(attrs[name])}; give the value once")
        attrs[name] = value
    if not attrs:
        raise _Invalid(column, "nothing to set: fill at least one set.<attribute> cell or give "
                       f"event_attributes as a non-empty JSON object like {_EXAMPLE_JSON}")
    _check_size(attrs, column, size_limit)
    return attrs


def _attribute_value(value: Any, column: str) -> Any:
    if isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(column, f"{value!r} is not a JSON number; give a finite number or "
                           "leave the cell empty")
        return value
    if isinstance(value, datetime):
        dt = parse_timestamp(value)
        return dt.isoformat().replace("+00:00", "Z")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    raise _Invalid(column, f"a {type(value).__name__} cannot be written to one attribute; "
                   "nested values go in event_attributes")


def _check_size(attrs: dict[str, Any], column: str, size_limit: bool = True) -> None:
    try:
        body = _COMPACT(attrs)
    except ValueError:
        raise _Invalid(column, "NaN or Infinity is not a valid JSON value; give a finite "
                       "number or null") from None
    except TypeError as exc:
        raise _Invalid(column, f"cannot be written as JSON ({exc})") from None
    try:
        size = len(body.encode("utf-8"))
    except UnicodeEncodeError:
        raise _Invalid(column, "holds an invalid character (a lone UTF-16 surrogate); fix the "
                       "text") from None
    if size_limit and size > MAX_ATTRIBUTES_BYTES:
        raise _Invalid(column, f"the attributes are {size} bytes as sent (compact UTF-8 JSON); "
                       f"the API limit is 10 KB ({MAX_ATTRIBUTES_BYTES} bytes): split the "
                       "change over several rows or shorten the values")


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
            raise _Invalid(None, f"--merge-mode {p.merge_mode!r} must be merge or replace")
        return p.merge_mode
    mode = text.lower()
    if mode not in MERGE_MODES:
        raise _Invalid("merge_mode", f"{_show(text)} is not a merge mode; write merge (update "
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
    raise _Invalid("idempotency_key", f"{_show(text)} {why}; an idempotency key is 1–64 "
                   "printable ASCII characters without spaces (or leave it empty to derive one)")


def _json_kind(obj: Any) -> str:
    if isinstance(obj, list):
        return "an array"
    if isinstance(obj, str):
        return "a string"
    if isinstance(obj, bool):
        return "a boolean"
    if obj is None:
        return "null"
    return "a number"


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return repr(text) if isinstance(value, str) else text


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return f"{type(value).__name__}:{value!r}"


def _problem_key(raw: RawRow) -> str:
    if not raw.cells:
        return row_key({"unreadable_row": raw.row_number, "problem": raw.problem or ""})
    return row_key({"invalid": {k: _safe(v) for k, v in raw.cells.items()}})

