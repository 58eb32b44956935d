"""JSON values compared as JSON: value *and* type, at every depth.

Python says `True == 1 == 1.0` and `{"a": 1} == {"a": True}`; the API stores what it is sent,
so an event holding `1` does not hold `true`, and a correction from `5` to `"5"` is a change
(of type) that `plan` should show.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def json_type(value: Any) -> str:
    """The JSON type name of a value as it would be sent (`1.0` and `1` differ, as the text
    `1.0` and `1` do)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def same_json(a: Any, b: Any) -> bool:
    """Equal value and equal JSON type, recursively (object keys compared as sets)."""
    ta = json_type(a)
    if ta != json_type(b):
        return False
    if ta == "object":
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if ta == "array":
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def holds(before: Mapping[str, Any], attrs: Mapping[str, Any], merge_mode: str) -> bool:
    """True when the event already carries exactly what the row asks for (value and type)."""
    if merge_mode == "replace":
        return same_json(dict(before), dict(attrs))
    return all(k in before and same_json(before[k], v) for k, v in attrs.items())


def type_changes(before: Mapping[str, Any] | None, attrs: Mapping[str, Any]) -> list[str]:
    """`attr: integer → string` for each attribute the correction gives another JSON type."""
    if not before:
        return []
    return [f"{k}: {json_type(before[k])} → {json_type(v)}" for k, v in attrs.items()
            if k in before and before[k] is not None and v is not None
            and json_type(before[k]) != json_type(v)]
