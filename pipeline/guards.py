"""Guards: a correction lands only where the event still holds what the reviewer saw.

Two kinds, one check. An `expect.<attr>` cell names single attributes the event must hold
right now (`expect.final_price = 99.99`); a saved plan's item (and every revert item) carries
the event's whole attribute set as it was seen, so any change since — an attribute edited,
added or dropped — counts. An event that fails its guard is `drifted`: nothing is sent to it.

Equality is JSON equality with the type included: `true` is not `1`, `1.0` is not `1`,
`"5"` is not `5` — the same rule as the no-op check, because a reviewer approved values,
not Python's idea of equal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.jsontypes import same_json

#: How many differing attributes a drift message names before it says "and N more".
_SHOWN = 5


@dataclass(frozen=True)
class Guard:
    """What an event must hold for a correction to be sent to it."""

    expected: Mapping[str, Any]
    #: True: the whole attribute set must be exactly `expected` (plans, reverts).
    #: False: only the named attributes are checked (`expect.<attr>` cells).
    whole: bool = False

    def drift(self, current: Mapping[str, Any]) -> str | None:
        """None when the event holds what is expected; else what differs, for the report."""
        names = sorted(set(self.expected) | set(current)) if self.whole else sorted(
            self.expected)
        differ = [n for n in names if not _same_slot(self.expected, current, n)]
        if not differ:
            return None
        parts = [f"{n}: expected {_show(self.expected, n)}, found {_show(current, n)}"
                 for n in differ[:_SHOWN]]
        if len(differ) > _SHOWN:
            parts.append(f"… and {len(differ) - _SHOWN} more")
        head = ("the event changed since it was seen" if self.whole
                else "the event does not hold the expected value")
        return f"{head}: " + "; ".join(parts)

    def as_json(self) -> dict[str, Any]:
        return {"expected": dict(self.expected), "whole": self.whole}

    @staticmethod
    def from_json(data: Mapping[str, Any] | None) -> Guard | None:
        if data is None:
            return None
        return Guard(dict(data["expected"]), bool(data.get("whole", False)))


def _same_slot(expected: Mapping[str, Any], current: Mapping[str, Any], name: str) -> bool:
    if (name in expected) != (name in current):
        return False
    return name not in expected or same_json(expected[name], current[name])


def _show(attrs: Mapping[str, Any], name: str) -> str:
    if name not in attrs:
        return "(absent)"
    text = json.dumps(attrs[name], ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "…"
