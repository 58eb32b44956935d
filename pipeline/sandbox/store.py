"""In-memory event store behind the sandbox: lookups, mutations, idempotency, propagation delay.

The store holds the API's *domain* rules (idempotent replay, 409, 404, system events, the
calendar-month rule) so they are checked and committed in one step under one lock; the HTTP
layer (`app.py`) only parses, authenticates and injects faults.

Lookups never scan all events: each (event_type, attribute_key) gets an index on first use,
mapping the attribute's text form to a list of events sorted newest first, kept up to date as
mutations become visible.
"""

from __future__ import annotations

import bisect
import heapq
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from pipeline.timeutil import format_event_time, same_month

LOOKUP_LIMIT = 10
SYSTEM_EVENT_TYPES = frozenset({"pageview", "user_identify", "group", "lead"})
_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
#: Namespace for the mutation_id replayed for a key preloaded as "used by an earlier tool".
_PRELOADED_NS = uuid.UUID("6f1c1d2e-5a0b-4c1e-9a51-3d7c0b9e2f10")


def is_uuid(text: object) -> bool:
    """True for the canonical 8-4-4-4-12 hex form (the API's `UUID string`)."""
    return isinstance(text, str) and _UUID_RE.match(text) is not None


def is_system_event(event_type: str) -> bool:
    """Reserved event types the API refuses to mutate (422)."""
    return event_type.startswith("$") or event_type in SYSTEM_EVENT_TYPES


def value_text(value: Any) -> str | None:
    """The string an attribute value is compared as in a lookup (None: never matches)."""
    if isinstance(value, str):
        return value
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _sort_key(ts: datetime) -> int:
    """Negative microseconds since the epoch: ascending order = newest first."""
    return -((ts - _EPOCH) // _US)


@dataclass(slots=True)
class Event:
    """One stored event. `attributes` is the committed state; `visible` what lookups see."""

    event_id: str
    event_type: str
    timestamp: datetime
    is_deleted: bool
    attributes: dict[str, Any]
    visible: dict[str, Any] = field(default_factory=dict)
    visible_seq: int = 0

    def as_api(self, *, committed: bool = False) -> dict[str, Any]:
        """The lookup endpoint's representation."""
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "event_attributes": self.attributes if committed else self.visible,
            "_timestamp": format_event_time(self.timestamp),
            "_is_deleted": 1 if self.is_deleted else 0,
        }


class MutationOutcome(NamedTuple):
    """What the mutation endpoint answers, and whether this call committed a change."""

    status: int
    body: dict[str, Any]
    applied: bool


@dataclass(slots=True)
class _KeyRecord:
    event_id: str
    response: dict[str, Any]


def _error(status: int, message: str) -> MutationOutcome:
    return MutationOutcome(status, {"status": 0, "error": message}, False)


# ---------------------------------------------------------------------------------------------
# The store


class EventStore:
    """Events, idempotency keys and pending (not yet visible) mutations, behind one lock."""

    def __init__(
        self,
        events: Iterable[Event],
        *,
        used_keys: Mapping[str, str] | None = None,
        propagation_delay: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._initial = [self._copy(e) for e in events]
        self._initial_keys = dict(used_keys or {})
        self.propagation_delay = propagation_delay
        self._clock = clock
        self._lock = threading.Lock()
        self._reset_locked()

    @classmethod
    def from_files(
        cls,
        events_path: str | Path,
        used_keys_path: str | Path | None = None,
        *,
        propagation_delay: float = 0.0,
    ) -> EventStore:
        from pipeline.sandbox.loading import load_events, load_used_keys

        used = load_used_keys(used_keys_path) if used_keys_path else None
        return cls(load_events(events_path), used_keys=used,
                   propagation_delay=propagation_delay)

    @staticmethod
    def _copy(event: Event) -> Event:
        # Attribute dicts are never changed in place (a mutation builds a new dict), so the
        # fresh Event may share them: reset stays cheap for a million events.
        attrs = event.attributes
        return Event(event.event_id.lower(), event.event_type, event.timestamp,
                     event.is_deleted, attrs, attrs)

    # -- lifecycle -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the loaded events and preloaded keys; counters cleared."""
        with self._lock:
            self._reset_locked()

    def _reset_locked(self) -> None:
        self._events: dict[str, Event] = {}
        self._by_type: dict[str, list[Event]] = {}
        for original in self._initial:
            event = self._copy(original)
            if event.event_id in self._events:
                raise ValueError(f"duplicate event_id {event.event_id}")
            self._events[event.event_id] = event
            self._by_type.setdefault(event.event_type, []).append(event)
        # (event_type, attribute_key) -> value text -> [(sort key, event_id)] ascending
        self._indexes: dict[tuple[str, str], dict[str, list[tuple[int, str]]]] = {}
        self._indexed_keys: dict[str, set[str]] = {}
        self._keys: dict[str, _KeyRecord] = {
            key: _KeyRecord(event_id, self._preloaded_response(key, event_id))
            for key, event_id in self._initial_keys.items()
        }
        self._pending: list[tuple[float, int, str, dict[str, Any]]] = []
        self._seq = 0
        self.applications: Counter[str] = Counter()
        self.replays = 0
        self.conflicts = 0

    @staticmethod
    def _preloaded_response(key: str, event_id: str) -> dict[str, Any]:
        return {"status": 1, "mutation_id": str(uuid.uuid5(_PRELOADED_NS, key)),
                "event_id": event_id}

    def forget_keys(self) -> int:
        """Drop every remembered idempotency key (a provider pruning old keys); counts stay."""
        with self._lock:
            n = len(self._keys)
            self._keys.clear()
            return n

    # -- reads ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._events)

    def get(self, event_id: str) -> Event | None:
        """The event with its committed state (ignores propagation delay)."""
        with self._lock:
            return self._events.get(event_id.lower())

    def lookup(
        self,
        event_type: str,
        attribute_key: str,
        attribute_value: str,
        from_ts: datetime,
        to_ts: datetime,
        *,
        limit: int = LOOKUP_LIMIT,
    ) -> list[dict[str, Any]]:
        """Matching events (deleted included), newest first, ties by event_id, at most `limit`."""
        with self._lock:
            self._apply_due_locked(self._clock())
            if attribute_key:
                bucket = self._index_locked(event_type, attribute_key).get(attribute_value)
            else:
                bucket = self._index_locked(event_type, "").get("")
            if not bucket:
                return []
            hi = _sort_key(from_ts)
            start = bisect.bisect_left(bucket, (_sort_key(to_ts), ""))
            out: list[dict[str, Any]] = []
            for sk, event_id in bucket[start:start + limit]:
                if sk > hi:
                    break
                out.append(self._events[event_id].as_api())
            return out

    def _index_locked(self, event_type: str, key: str) -> dict[str, list[tuple[int, str]]]:
        index = self._indexes.get((event_type, key))
        if index is None:
            index = {}
            for event in self._by_type.get(event_type, ()):
                text = "" if not key else value_text(event.visible.get(key))
                if text is not None:
                    index.setdefault(text, []).append(
                        (_sort_key(event.timestamp), event.event_id))
            for bucket in index.values():
                bucket.sort()
            self._indexes[(event_type, key)] = index
            self._indexed_keys.setdefault(event_type, set()).add(key)
        return index

    # -- writes --------------------------------------------------------------------------------

    def mutate(
        self,
        event_id: str,
        timestamp: datetime,
        attributes: Mapping[str, Any],
        merge_mode: str,
        key: str,
    ) -> MutationOutcome:
        """Apply one validated request: replay/409, then 404, system event 422, month 422."""
        event_id = event_id.lower()
        with self._lock:
            record = self._keys.get(key)
            if record is not None:
                if record.event_id == event_id:
                    self.replays += 1
                    return MutationOutcome(200, record.response, False)
                self.conflicts += 1
                return _error(409, "idempotency_key was already used with another event_id")
            event = self._events.get(event_id)
            if event is None or event.is_deleted:
                return _error(404, "event not found")
            if is_system_event(event.event_type):
                return _error(422, f"system event type {event.event_type!r} cannot be mutated")
            if not same_month(timestamp, event.timestamp):
                return _error(
                    422, "timestamp must be in the same calendar month as the event "
                         f"({event.timestamp:%Y-%m})")
            if merge_mode == "replace":
                new_attrs = dict(attributes)
            else:
                new_attrs = {**event.attributes, **attributes}
            event.attributes = new_attrs
            self._seq += 1
            if self.propagation_delay > 0:
                heapq.heappush(self._pending, (self._clock() + self.propagation_delay,
                                               self._seq, event_id, new_attrs))
            else:
                self._make_visible_locked(event, self._seq, new_attrs)
            response = {"status": 1, "mutation_id": str(uuid.uuid4()), "event_id": event_id}
            self._keys[key] = _KeyRecord(event_id, response)
            self.applications[key] += 1
            return MutationOutcome(200, response, True)

    def _apply_due_locked(self, now: float) -> None:
        pending = self._pending
        while pending and pending[0][0] <= now:
            _, seq, event_id, attrs = heapq.heappop(pending)
            self._make_visible_locked(self._events[event_id], seq, attrs)

    def _make_visible_locked(self, event: Event, seq: int, attrs: dict[str, Any]) -> None:
        if seq < event.visible_seq:  # a later mutation already became visible
            return
        old = event.visible
        event.visible, event.visible_seq = attrs, seq
        sk = (_sort_key(event.timestamp), event.event_id)
        for key in self._indexed_keys.get(event.event_type, ()):
            if not key:
                continue
            before, after = value_text(old.get(key)), value_text(attrs.get(key))
            if before == after:
                continue
            index = self._indexes[(event.event_type, key)]
            if before is not None:
                bucket = index[before]
                del bucket[bisect.bisect_left(bucket, sk)]
                if not bucket:
                    del index[before]
            if after is not None:
                bisect.insort(index.setdefault(after, []), sk)

    # -- stats ---------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """applications per key, keys applied more than once, totals."""
        with self._lock:
            apps = dict(self.applications)
            return {
                "applications": apps,
                "double_applied": sorted(k for k, n in apps.items() if n > 1),
                "mutations": sum(apps.values()),
                "replays": self.replays,
                "conflicts": self.conflicts,
                "pending_propagation": len(self._pending),
            }
