"""Timestamps: one parser for sheets, one formatter for the API.

Rule (documented in the README): a time with no zone is UTC; a time with an offset is converted
to UTC; a bare date means midnight UTC (or, as the end of a window, the last millisecond of that
day); a bare month (`2026-09`) means its first millisecond (or, as an end, its last).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MONTH_ONLY = re.compile(r"^(\d{4})-(\d{2})$")
#: The lookup endpoint's `_timestamp`: `YYYY-MM-DD HH:MM:SS` (a `T`, a fraction and a zone are
#: tolerated, being unambiguous); epoch numbers, local date orders and RFC 2822 are not.
_EVENT_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:?\d{2})?$")


class TimestampError(ValueError):
    """The text is not an ISO 8601 date or date-time."""


def parse_timestamp(value: object, *, end_of_day: bool = False) -> datetime:
    """Parse an ISO 8601 string (or a datetime/date from Parquet) into an aware UTC datetime."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime.combine(value, time.max if end_of_day else time.min)
        if end_of_day:
            dt = dt.replace(microsecond=999000)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise TimestampError("empty timestamp")
        if m := _MONTH_ONLY.match(text):
            try:
                first = datetime(int(m[1]), int(m[2]), 1, tzinfo=UTC)
            except ValueError:
                raise TimestampError(f"{value!r} is not a valid month (YYYY-MM)") from None
            return month_window(first)[1] if end_of_day else first
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise TimestampError(
                f"{value!r} is not an ISO 8601 time (e.g. 2026-03-10T14:30:00Z)"
            ) from None
        if end_of_day and _DATE_ONLY.match(text):
            dt = datetime.combine(dt.date(), time(23, 59, 59, 999000))
    else:
        raise TimestampError(f"{value!r} is not a timestamp")
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def format_api(dt: datetime) -> str:
    """ISO 8601 with milliseconds and a Z, the form the API documents."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_event_time(text: str) -> datetime:
    """The lookup endpoint's `_timestamp` (`YYYY-MM-DD HH:MM:SS`, UTC); any other shape is a
    `TimestampError`, never a guess."""
    if not _EVENT_TIME.match(text.strip()):
        raise TimestampError(f"{text!r} is not a lookup timestamp (YYYY-MM-DD HH:MM:SS)")
    return parse_timestamp(text)


def format_event_time(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def month_window(dt: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) holding `dt`, as [first ms, last ms]."""
    dt = dt.astimezone(UTC)
    start = datetime(dt.year, dt.month, 1, tzinfo=UTC)
    nxt = datetime(dt.year + (dt.month == 12), dt.month % 12 + 1, 1, tzinfo=UTC)
    return start, nxt - timedelta(milliseconds=1)


def same_month(a: datetime, b: datetime) -> bool:
    a, b = a.astimezone(UTC), b.astimezone(UTC)
    return (a.year, a.month) == (b.year, b.month)


def utcnow() -> datetime:
    return datetime.now(UTC)
