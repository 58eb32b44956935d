"""Events → batches (one user each) → requests (up to 100 batches), within mParticle's limits.

A batch's `source_request_id` is derived from the batch's own content, and the exact body is
kept in the checkpoint, so a batch resent after a crash is byte-for-byte the one mParticle may
already hold, and mParticle drops it as a duplicate.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from pipeline.keys import canonical_json
from pipeline.targets.mparticle.limits import (
    BULK_PATH,
    HISTORICAL_AFTER,
    HISTORICAL_MIN_AGE,
    HISTORICAL_PATH,
    MAX_BATCH_BYTES,
    MAX_BATCHES_PER_REQUEST,
    MAX_EVENTS_PER_BATCH,
    MAX_REQUEST_BYTES,
    MAX_USER_ATTRIBUTES,
)
from pipeline.targets.mparticle.mapping import MParticleOptions, Problem, User

_REQUEST_NS = uuid.uuid5(uuid.NAMESPACE_OID, "corrections.mparticle.source_request_id")
_SRID_OVERHEAD = len(',"source_request_id":""') + 36


@dataclass
class PlannedDelivery:
    """One correction on its way to mParticle: a custom event, or user attributes."""

    row_key: str
    row_number: int
    event_key: str
    seq: int
    source_message_id: str
    user: User
    event_id: str | None = None
    event_time: datetime | None = None
    event: dict[str, Any] | None = None
    user_attributes: dict[str, Any] | None = None

    @property
    def payload(self) -> dict[str, Any]:
        """What the report shows as the attributes sent."""
        if self.event is not None:
            return dict(self.event["data"].get("custom_attributes") or {})
        return dict(self.user_attributes or {})


@dataclass
class PlannedBatch:
    """A batch ready to commit: its id (= source_request_id), endpoint and exact body."""

    batch_id: str
    endpoint: str
    user_key: str
    body: str
    deliveries: list[PlannedDelivery] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.body.encode("utf-8"))


def source_request_id(batch: dict[str, Any]) -> str:
    """A UUID from the batch's canonical content (without the id itself)."""
    digest = hashlib.sha256(canonical_json(batch).encode("utf-8", "surrogatepass")).hexdigest()
    return str(uuid.uuid5(_REQUEST_NS, digest))


def route(event_time: datetime | None, now: datetime) -> str:
    """`/historical` for events older than 30 days; everything else (and no event) to bulk.

    Anything younger than 72 hours never goes to `/historical` (it refuses those), which the
    30-day threshold already guarantees; the assertion keeps a future change honest.
    """
    if event_time is None or now - event_time <= HISTORICAL_AFTER:
        return BULK_PATH
    assert now - event_time >= HISTORICAL_MIN_AGE
    return HISTORICAL_PATH


def _finish(user: User, options: MParticleOptions, events: list[dict[str, Any]] | None,
            user_attributes: dict[str, Any] | None) -> tuple[str, str]:
    batch: dict[str, Any] = {"environment": options.environment, **user.batch_fields()}
    if events is not None:
        batch["events"] = events
    if user_attributes is not None:
        batch["user_attributes"] = user_attributes
    batch["source_request_id"] = source_request_id(batch)
    return batch["source_request_id"], canonical_json(batch)


def _size(value: Any) -> int:
    return len(canonical_json(value).encode("utf-8", "surrogatepass"))


class _Open:
    """A batch being filled for one (user, endpoint)."""

    def __init__(self, user: User, endpoint: str, options: MParticleOptions) -> None:
        self.user = user
        self.endpoint = endpoint
        self.deliveries: list[PlannedDelivery] = []
        self.events: list[dict[str, Any]] = []
        self.attrs: dict[str, Any] = {}
        empty = {"environment": options.environment, **user.batch_fields()}
        self.base = _size(empty) + _SRID_OVERHEAD
        self.bytes = self.base
        self.options = options

    def event_cost(self, event: dict[str, Any]) -> int:
        # ,"events":[...] costs its key once; each event its text plus a comma
        key = len(',"events":[]') if not self.events else 1
        return key + _size(event)

    def attrs_cost(self, attrs: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        merged = {**self.attrs, **attrs}
        return self.base + len(',"user_attributes":') + _size(merged), merged

    def close(self) -> PlannedBatch:
        events = self.events if self.events else None
        attrs = self.attrs if self.attrs else None
        batch_id, body = _finish(self.user, self.options, events, attrs)
        out = PlannedBatch(batch_id, self.endpoint, self.user.key, body, self.deliveries)
        assert out.size <= MAX_BATCH_BYTES, out.size
        return out


def build_batches(deliveries: Iterable[PlannedDelivery], options: MParticleOptions,
                  now: datetime) -> tuple[list[PlannedBatch], list[tuple[PlannedDelivery,
                                                                          Problem]]]:
    """Group deliveries into batches of one user and one endpoint, in sheet order.

    Returns the batches and the deliveries that cannot fit any batch (over 128 KB alone).
    """
    open_: dict[tuple[str, str], _Open] = {}
    done: list[PlannedBatch] = []
    too_big: list[tuple[PlannedDelivery, Problem]] = []
    for d in deliveries:
        endpoint = route(d.event_time if d.event is not None else None, now)
        slot = (d.user.key, endpoint)
        batch = open_.get(slot)
        if batch is None:
            batch = open_[slot] = _Open(d.user, endpoint, options)
        if d.event is not None:
            cost = batch.event_cost(d.event)
            if batch.events and (len(batch.events) >= MAX_EVENTS_PER_BATCH
                                 or batch.bytes + cost > MAX_BATCH_BYTES):
                done.append(batch.close())
                batch = open_[slot] = _Open(d.user, endpoint, options)
                cost = batch.event_cost(d.event)
            if batch.bytes + cost > MAX_BATCH_BYTES:
                too_big.append((d, _too_big(batch.bytes + cost)))
                continue
            batch.events.append(d.event)
            batch.bytes += cost
        else:
            attrs = d.user_attributes or {}
            size, merged = batch.attrs_cost(attrs)
            if batch.deliveries and (size > MAX_BATCH_BYTES
                                     or len(merged) > MAX_USER_ATTRIBUTES):
                done.append(batch.close())
                batch = open_[slot] = _Open(d.user, endpoint, options)
                size, merged = batch.attrs_cost(attrs)
            if size > MAX_BATCH_BYTES:
                too_big.append((d, _too_big(size)))
                continue
            batch.attrs = merged
            batch.bytes = size
        batch.deliveries.append(d)
    done.extend(b.close() for b in open_.values() if b.deliveries)
    return done, too_big


def _too_big(size: int) -> Problem:
    return Problem(None, f"the batch for this correction would be {size} bytes; the Events API "
                   f"takes at most {MAX_BATCH_BYTES} bytes (128 KB) per batch: shorten the values")


@dataclass(frozen=True)
class Outgoing:
    """A committed batch as the sender needs it: where it goes and its exact bytes."""

    batch_id: str
    endpoint: str
    user_key: str
    body: bytes

    @property
    def size(self) -> int:
        return len(self.body)


class _Sized(Protocol):
    @property
    def endpoint(self) -> str: ...

    @property
    def user_key(self) -> str: ...

    @property
    def size(self) -> int: ...


S = TypeVar("S", bound=_Sized)


def pack_requests(batches: Iterable[S]) -> Iterator[list[S]]:
    """Requests of one endpoint: ≤ 100 batches, < 256 KB, each user at most once.

    One user per request keeps a user's batches in order: the sender chains requests that
    share a user, so a later correction never overtakes an earlier one.
    """
    open_: dict[str, tuple[list[S], int, set[str]]] = {}
    for b in batches:
        group, size, users = open_.get(b.endpoint, ([], 2, set()))
        extra = b.size + (1 if group else 0)
        if group and (len(group) >= MAX_BATCHES_PER_REQUEST or size + extra >= MAX_REQUEST_BYTES
                      or b.user_key in users):
            yield group
            group, size, users = [], 2, set()
            extra = b.size
        group.append(b)
        users.add(b.user_key)
        open_[b.endpoint] = (group, size + extra, users)
    for group, _, _ in open_.values():
        if group:
            yield group


def request_body(batches: list[Outgoing]) -> bytes:
    return b"[" + b",".join(b.body for b in batches) + b"]"
