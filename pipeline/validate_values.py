"""Cell values of a sheet row: ids, times, the attributes to write, and how they are shown.

Each check raises `CellError` naming the column and what to write instead; `pipeline.validate`
turns it into the row's problem.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from pipeline.keys import canonical_json
from pipeline.sheet import EXPECT_PREFIX, SET_PREFIX
from pipeline.timeutil import TimestampError, parse_timestamp


class CellError(Exception):
    """One cell (or the row's attributes as a whole) is not acceptable."""

    def __init__(self, column: str | None, message: str) -> None:
        super().__init__(message)
        self.column = column
        self.message = message


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_EXAMPLE_TIME = "2026-03-10T14:30:00Z"
_TS_CACHE: dict[tuple[str, bool], tuple[datetime, str] | str] = {}
_DT_CACHE: dict[tuple[date, bool], tuple[datetime, str]] = {}
_TS_CACHE_MAX = 65536

#: Largest `event_attributes` the API accepts, as compact UTF-8 JSON.
MAX_ATTRIBUTES_BYTES = 10240
_EXAMPLE_JSON = '{"final_price": "149.99"}'
_SET_COLUMNS = "set.*"
_BIG = MAX_ATTRIBUTES_BYTES  # forces the exact size check
_NUMBER_BOUND = 10**20
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _reject_constant(name: str) -> Any:
    raise CellError("event_attributes", f"{name} is not a valid JSON value; write a number, a "
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
                raise CellError("event_attributes", f"not valid JSON ({exc.msg} at character "
                               f"{exc.pos + 1}); write a JSON object like {_EXAMPLE_JSON}"
                               ) from None
            except RecursionError:
                raise CellError("event_attributes", "the JSON is nested too deeply; flatten "
                               "it") from None
        else:
            obj = given
        if not isinstance(obj, dict):
            raise CellError("event_attributes", f"must be a JSON object like {_EXAMPLE_JSON}, "
                           f"not {_json_kind(obj)}")
        attrs.update(obj)
    for col, value in cells.items():
        if not col.startswith(SET_PREFIX):
            continue
        name = col[4:]
        value = _attribute_value(value, col)
        if name in attrs and canonical_json(attrs[name]) != canonical_json(value):
            raise CellError(col, f"{col} = {_show(value)} conflicts with event_attributes "
                           f"{name!r} = {_show(attrs[name])}; give the value once")
        attrs[name] = value
    if not attrs:
        raise CellError(column, "nothing to set: fill at least one set.<attribute> cell or give "
                       f"event_attributes as a non-empty JSON object like {_EXAMPLE_JSON}")
    _check_size(attrs, column, size_limit)
    return attrs


def _attribute_value(value: Any, column: str) -> Any:
    if isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CellError(column, f"{value!r} is not a JSON number; give a finite number or "
                           "leave the cell empty")
        return value
    if isinstance(value, datetime):
        dt = parse_timestamp(value)
        return dt.isoformat().replace("+00:00", "Z")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    raise CellError(column, f"a {type(value).__name__} cannot be written to one attribute; "
                   "nested values go in event_attributes")


def _check_size(attrs: dict[str, Any], column: str, size_limit: bool = True) -> None:
    try:
        body = _COMPACT(attrs)
    except ValueError:
        raise CellError(column, "NaN or Infinity is not a valid JSON value; give a finite "
                       "number or null") from None
    except TypeError as exc:
        raise CellError(column, f"cannot be written as JSON ({exc})") from None
    try:
        size = len(body.encode("utf-8"))
    except UnicodeEncodeError:
        raise CellError(column, "holds an invalid character (a lone UTF-16 surrogate); fix the "
                       "text") from None
    if size_limit and size > MAX_ATTRIBUTES_BYTES:
        raise CellError(column, f"the attributes are {size} bytes as sent (compact UTF-8 JSON); "
                       f"the API limit is 10 KB ({MAX_ATTRIBUTES_BYTES} bytes): split the "
                       "change over several rows or shorten the values")






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
        raise CellError("event_id", f"{_show(text)} is not a UUID; write the event's id like "
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
        raise CellError(column, cached)
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
                raise CellError(column, f"{value!r} is out of range; give a real time") from None
            known = (dt, _iso(dt))
            if len(_DT_CACHE) >= _TS_CACHE_MAX:
                _DT_CACHE.clear()
            _DT_CACHE[(value, end_of_day)] = known
        return known
    raise CellError(column, f"{_show(value)} is not a time; write e.g. {_EXAMPLE_TIME}")

def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds")


def expected_values(cells: Mapping[str, Any]) -> dict[str, Any]:
    """`expect.<attr>` cells: the values the event must hold now (typed like `set.*`)."""
    return {col[7:]: _attribute_value(value, col) for col, value in cells.items()
            if col[:7] == EXPECT_PREFIX}
