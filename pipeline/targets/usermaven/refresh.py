"""An event's current state, read by its id and exact time, before a guarded change is sent.

A plan item names its event by id and the event's own `_timestamp`, so the lookup asks for
every event of that type within that one second (an empty attribute key, as the API allows),
and picks the id. Only when that second holds a full page (10, the API's cap) does it narrow
the lookup by the attribute the plan found the event by.
"""

from __future__ import annotations

from datetime import timedelta

from pipeline.errors import NotFoundError
from pipeline.model import Correction, FoundEvent, Window
from pipeline.targets.usermaven.resolve import LOOKUP_LIMIT, LookupCache

_SECOND = timedelta(milliseconds=999)


async def current_state(cache: LookupCache, c: Correction) -> FoundEvent:
    """The live event `c` addresses, as the API shows it now; `NotFoundError` otherwise."""
    assert c.event_id is not None and c.timestamp is not None and c.event_type is not None
    start = c.timestamp.replace(microsecond=0)
    window = Window(start, start + _SECOND)
    found, raw = await cache.get(c.event_type, "", "", window)
    event = _pick(found, c.event_id)
    if event is None and raw >= LOOKUP_LIMIT and c.lookup_key and c.lookup_value is not None:
        found, _ = await cache.get(c.event_type, c.lookup_key, c.lookup_value, window)
        event = _pick(found, c.event_id)
    if event is None:
        raise NotFoundError(f"the {c.event_type} event {c.event_id} is no longer found at "
                            f"{start.isoformat()}; nothing was sent")
    if event.is_deleted:
        raise NotFoundError(f"the event {c.event_id} was deleted since the plan; nothing was "
                            "sent")
    return event


def _pick(found: list[FoundEvent], event_id: str) -> FoundEvent | None:
    for e in found:
        if e.event_id == event_id:
            return e
    return None
