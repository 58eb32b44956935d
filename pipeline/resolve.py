"""From a sheet row to the event(s) it means: cached lookups, window splitting, selection.

Identical lookups share one request per run (also when they are in flight at the same time).
With `--on-multiple all`, a page of exactly 10 (the API's limit) means "maybe more": the
window is halved and each half looked up again until every slice answers fewer than 10.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from pipeline.model import Correction, FoundEvent, Status, Window

LOOKUP_LIMIT = 10
ON_MULTIPLE = ("fail", "newest", "all")
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
    """Even a one-millisecond slice is full: some matches cannot be listed."""


class LookupCache:
    """Bounded memo of lookup answers (and of lookups in flight), keyed by all their inputs."""

    def __init__(self, lookup: LookupFn, max_entries: int = 50_000) -> None:
        self._lookup = lookup
        self._max = max_entries
        self._done: OrderedDict[tuple[str, ...], tuple[list[FoundEvent], int]] = OrderedDict()
        self._pending: dict[tuple[str, ...], asyncio.Future[tuple[list[FoundEvent], int]]] = {}
        self.requests = 0
        self.hits = 0

    async def get(self, event_type: str, key: str, value: str,
                  window: Window) -> tuple[list[FoundEvent], int]:
        ck = (event_type, key, value, window.start.isoformat(), window.end.isoformat())
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
        if self.on_multiple == "all":
            try:
                found = await self._find_all(c.event_type, c.lookup_key, c.lookup_value,
                                             c.window)
            except LookupIncomplete as exc:
                return Resolution(Status.AMBIGUOUS, error=str(exc))
        else:
            found, _ = await self.cache.get(c.event_type, c.lookup_key, c.lookup_value,
                                            c.window)
        live = [e for e in found if not e.is_deleted]
        if not live:
            why = (f"only deleted events match {c.lookup_key}={c.lookup_value!r}" if found
                   else f"no {c.event_type} event with {c.lookup_key}={c.lookup_value!r} "
                        "in the window")
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

    async def _find_all(self, event_type: str, key: str, value: str,
                        window: Window) -> list[FoundEvent]:
        """Every match in the window, splitting it while a slice comes back full."""
        found, raw = await self.cache.get(event_type, key, value, window)
        if raw < LOOKUP_LIMIT:
            return found
        if window.end - window.start <= _MIN_SLICE:
            raise LookupIncomplete(
                f"more than {LOOKUP_LIMIT} {event_type} events with {key}={value!r} at "
                f"{window.start.isoformat()}; the API cannot list them all"
            )
        span = window.end - window.start
        mid = window.start + (span // 2)
        mid = mid.replace(microsecond=(mid.microsecond // 1000) * 1000)
        left = Window(window.start, mid)
        right = Window(mid + _MIN_SLICE, window.end)
        a, b = await asyncio.gather(
            self._find_all(event_type, key, value, left),
            self._find_all(event_type, key, value, right),
        )
        merged: dict[str, FoundEvent] = {}
        for e in (*a, *b):
            merged.setdefault(e.event_id, e)
        return sorted(merged.values(), key=lambda e: (e.timestamp, e.event_id), reverse=True)
