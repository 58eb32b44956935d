"""From a sheet row to the event(s) it means: cached lookups, window splitting, selection.

Identical lookups share one request per run (also when they are in flight at the same time).
A page of 10 (the API's limit; deleted events count) means "maybe more", whatever
`--on-multiple` says: the window is halved and each half looked up again until every slice
answers fewer than 10, so `fail` counts every match, `newest` sees past deleted ones and `all`
misses none. Each row has a budget: a full page at a one-millisecond slice, or more than
`MAX_LOOKUPS_PER_ROW` lookups, ends the row `ambiguous` with the reason.

Every returned event is checked against the query before it is used; an answer that does not
match is not trusted and the row is not applied.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pipeline.errors import UntrustedAnswer
from pipeline.keys import canonical_json
from pipeline.model import Correction, FoundEvent, Status, Window
from pipeline.timeutil import format_api

LOOKUP_LIMIT = 10
ON_MULTIPLE = ("fail", "newest", "all")
#: Lookups one row may make while splitting full pages (a month halves to one millisecond in
#: 32 steps, so ordinary dense data needs far fewer).
MAX_LOOKUPS_PER_ROW = 200
_MIN_SLICE = timedelta(milliseconds=1)

LookupFn = Callable[[str, str, str, Window], Awaitable[tuple[list[FoundEvent], int]]]


@dataclass(frozen=True)
class Resolution:
    """Where a row lands: events to mutate, or a final status with a reason."""

    status: Status
    events: tuple[FoundEvent, ...] = ()
    error: str | None = None
    candidates: tuple[str, ...] = field(default=())


class LookupIncomplete(Exception):
    """Some matches cannot be listed: a full page at the smallest slice, or the budget spent."""


def value_matches(held: Any, wanted: str) -> bool:
    """Whether an attribute value is a match for the looked-up text, as the API compares it.

    The API takes `attribute_value` as a string and compares the attribute's text form, so
    `1001` matches "1001" and `true` matches "true"; text is compared exactly.
    """
    if isinstance(held, str):
        return held == wanted
    if held is None:
        return False
    if isinstance(held, bool):
        return wanted in (("true", "1") if held else ("false", "0"))
    if isinstance(held, int | float):
        try:
            number = float(wanted)
        except ValueError:
            return False
        return math.isfinite(number) and number == held
    return canonical_json(held) == wanted


def mismatch(e: FoundEvent, event_type: str, key: str, value: str,
             window: Window) -> str | None:
    """Why a returned event is not an answer to the query, or None when it is."""
    if e.event_type != event_type:
        return f"event {e.event_id} has event_type {e.event_type!r}, not {event_type!r}"
    if key and not value_matches(e.attributes.get(key), value):
        held = e.attributes.get(key)
        return (f"event {e.event_id} has {key}={held!r}, not {value!r}" if key in e.attributes
                else f"event {e.event_id} has no {key}")
    # `_timestamp` has whole seconds: the window's start counts from its second
    if not window.start.replace(microsecond=0) <= e.timestamp <= window.end:
        return (f"event {e.event_id} at {e.timestamp.isoformat()} lies outside the window "
                f"{window.start.isoformat()} – {window.end.isoformat()}")
    return None


class LookupCache:
    """Bounded memo of lookup answers (and of lookups in flight), keyed by all their inputs."""

    def __init__(self, lookup: LookupFn, max_entries: int = 50_000) -> None:
        self._lookup = lookup
        self._max = max_entries
        self._done: OrderedDict[tuple[object, ...], tuple[list[FoundEvent], int]] = OrderedDict()
        self._pending: dict[tuple[object, ...],
                            asyncio.Future[tuple[list[FoundEvent], int]]] = {}
        self.requests = 0
        self.hits = 0

    async def get(self, event_type: str, key: str, value: str,
                  window: Window) -> tuple[list[FoundEvent], int]:
        # equal instants are one window, whatever their zone (datetimes hash by instant)
        ck = (event_type, key, value, window.start, window.end)
        if ck in self._done:
            self.hits += 1
            self._done.move_to_end(ck)
            return self._done[ck]
        if ck in self._pending:
            self.hits += 1
            return await asyncio.shield(self._pending[ck])
        fut: asyncio.Future[tuple[list[FoundEvent], int]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[ck] = fut
        self.requests += 1
        try:
            result = await self._lookup(event_type, key, value, window)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._pending[ck]
        fut.set_result(result)
        self._done[ck] = result
        if len(self._done) > self._max:
            self._done.popitem(last=False)
        return result


class Resolver:
    def __init__(self, cache: LookupCache, on_multiple: str = "fail") -> None:
        if on_multiple not in ON_MULTIPLE:
            raise ValueError(f"on_multiple must be one of {ON_MULTIPLE}")
        self.cache = cache
        self.on_multiple = on_multiple

    async def resolve(self, c: Correction) -> Resolution:
        assert c.event_type and c.lookup_key is not None and c.lookup_value is not None
        assert c.window is not None
        try:
            found = await self.find_all(c.event_type, c.lookup_key, c.lookup_value, c.window)
        except LookupIncomplete as exc:
            return Resolution(Status.AMBIGUOUS, error=str(exc))
        except UntrustedAnswer as exc:
            return Resolution(Status.FAILED, error=str(exc))
        live = [e for e in found if not e.is_deleted]
        if not live:
            searched = f"{format_api(c.window.start)} – {format_api(c.window.end)}"
            why = (f"only deleted events match {c.lookup_key}={c.lookup_value!r} in the window "
                   f"{searched}" if found
                   else f"no {c.event_type} event with {c.lookup_key}={c.lookup_value!r} "
                        f"in the window {searched}")
            return Resolution(Status.NOT_FOUND, error=why)
        if len(live) == 1 or self.on_multiple == "all":
            return Resolution(Status.PENDING, events=tuple(live))
        if self.on_multiple == "newest":
            return Resolution(Status.PENDING, events=(live[0],))
        ids = tuple(e.event_id for e in live)
        return Resolution(
            Status.AMBIGUOUS, candidates=ids,
            error=f"{len(live)} events match; candidates: {', '.join(ids)} "
                  "(use --on-multiple newest|all, or name event_id)",
        )

    async def find_all(self, event_type: str, key: str, value: str,
                       window: Window) -> list[FoundEvent]:
        """Every match in the window, newest first, each checked against the query.

        Raises `LookupIncomplete` when the matches cannot all be listed within the row's
        budget, and `UntrustedAnswer` when a returned event does not match the query.
        """
        budget = [MAX_LOOKUPS_PER_ROW]
        found = await self._split(event_type, key, value, window, budget)
        merged: dict[str, FoundEvent] = {}
        for e in found:
            merged.setdefault(e.event_id, e)
        return sorted(merged.values(), key=lambda e: (e.timestamp, e.event_id), reverse=True)

    async def _split(self, event_type: str, key: str, value: str, window: Window,
                     budget: list[int]) -> list[FoundEvent]:
        """Look the window up; while a page comes back full, halve it (newer half first)."""
        if budget[0] <= 0:
            raise LookupIncomplete(
                f"{event_type} events with {key}={value!r}: lookups still return full pages "
                f"after {MAX_LOOKUPS_PER_ROW} lookups; the matches cannot all be listed. "
                "Narrow the row's window (from_timestamp/to_timestamp) or name event_id")
        budget[0] -= 1
        found, raw = await self.cache.get(event_type, key, value, window)
        for e in found:
            if (why := mismatch(e, event_type, key, value, window)) is not None:
                raise UntrustedAnswer(
                    f"the lookup answer does not match the query: {why}; the answer is not "
                    "trusted, nothing was sent (the next run looks it up again)",
                    http_status=200)
        if raw < LOOKUP_LIMIT:
            return found
        if window.end - window.start <= _MIN_SLICE:
            over = f" (the API answered {raw}, more than its documented {LOOKUP_LIMIT})" \
                if raw > LOOKUP_LIMIT else ""
            raise LookupIncomplete(
                f"more than {LOOKUP_LIMIT} {event_type} events with {key}={value!r} at "
                f"{window.start.isoformat()}{over}; the API cannot list them all. Name "
                "event_id for this row")
        span = window.end - window.start
        mid = window.start + (span // 2)
        mid = mid.replace(microsecond=(mid.microsecond // 1000) * 1000)
        newer = await self._split(event_type, key, value, Window(mid + _MIN_SLICE, window.end),
                                  budget)
        older = await self._split(event_type, key, value, Window(window.start, mid), budget)
        return [*newer, *older]
