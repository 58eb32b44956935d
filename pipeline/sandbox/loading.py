"""Loading the sandbox's events (CSV or Parquet) and the keys an earlier tool already used."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.sandbox.store import Event, is_uuid
from pipeline.timeutil import parse_timestamp


def _parse_deleted(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    text = str(value).strip().lower()
    if text in ("", "0", "false", "f", "no"):
        return False
    if text in ("1", "true", "t", "yes"):
        return True
    raise ValueError(f"_is_deleted {value!r} is not 0/1")


def _parse_attributes(value: Any) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list):  # a Parquet map column comes back as [(key, value), ...]
        return dict(value)
    parsed = json.loads(value)
    if not isinstance(parsed, dict):
        raise ValueError("event_attributes is not a JSON object")
    return parsed


def make_event(row: Mapping[str, Any]) -> Event:
    """One event from a file row (columns event_id, event_type, _timestamp, _is_deleted, ...)."""
    event_id = str(row["event_id"]).strip()
    if not is_uuid(event_id):
        raise ValueError(f"event_id {event_id!r} is not a UUID")
    attributes = _parse_attributes(row.get("event_attributes"))
    return Event(
        event_id=event_id.lower(),
        event_type=str(row["event_type"]),
        timestamp=parse_timestamp(row["_timestamp"]),
        is_deleted=_parse_deleted(row.get("_is_deleted")),
        attributes=attributes,
        visible=attributes,
    )


def load_events(path: str | Path) -> list[Event]:
    """Events from a CSV (UTF-8, BOM tolerated) or Parquet file; row errors name the line."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        rows: Iterable[Mapping[str, Any]] = pq.read_table(path).to_pylist()
        first = 1
    else:
        handle = path.open(newline="", encoding="utf-8-sig")
        rows = csv.DictReader(handle)
        first = 2
    events: list[Event] = []
    try:
        for number, row in enumerate(rows, start=first):
            try:
                events.append(make_event(row))
            except (KeyError, ValueError, TypeError) as exc:
                raise ValueError(f"{path}: row {number}: {exc}") from None
    finally:
        if not isinstance(rows, list):
            handle.close()
    return events


def load_used_keys(path: str | Path) -> dict[str, str]:
    """`idempotency_key,event_id` CSV: keys an earlier tool already used."""
    with Path(path).open(newline="", encoding="utf-8-sig") as handle:
        return {
            row["idempotency_key"]: row["event_id"].strip().lower()
            for row in csv.DictReader(handle)
            if row.get("idempotency_key")
        }
