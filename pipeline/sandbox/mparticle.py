"""The sandbox's mParticle Events API: `/v2/events`, `/v2/bulkevents`, `/v2/bulkevents/historical`.

Served by the same aiohttp app as the Usermaven endpoints, with the same seeded faults. It is
an independent reading of the reference (seed 001) and the batch schema, not a copy of the
pipeline's rules, so it catches the pipeline's mistakes:

* Basic auth: a missing header is 401, a wrong key/secret 403.
* Request: JSON; an array of at most 100 batches for the bulk paths (one object for
  `/v2/events`); under 256 KB.
* Batch shape: known top-level fields only (so `schema_version` is refused, as the schema
  does), `environment` in its enum, identity keys the schema allows, a user (identities or
  MPID), events with a known `event_type`, custom events with `event_name` and a
  `custom_event_type` from its enum, `source_message_id` a UUID; at most 100 custom attributes
  per event and 100 user attributes, names ≤ 256 and values ≤ 4096 characters, ≤ 128 KB.
* `/historical`: refuses batches without events, events without `timestamp_unixtime_ms`, and
  events less than 72 hours old.
* Answers: 202 (also when only some batches of a bulk request fail — those are dropped and
  listed in the body), 400 with mParticle's `{"errors": [{"code", "message"}]}` when nothing
  in the request can be taken. A batch whose `source_request_id` was seen before is dropped as
  a duplicate (still 202). Accepted events are counted per `source_message_id`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from pipeline.sandbox.faults import FaultInjector

SANDBOX_MP_KEY = "sandbox-mp-key"
SANDBOX_MP_SECRET = "sandbox-mp-secret"
PATHS = {"events": "/v2/events", "bulkevents": "/v2/bulkevents",
         "historical": "/v2/bulkevents/historical"}

_BATCH_FIELDS = frozenset({
    "api_key", "api_keys", "application_info", "attribution_info", "batch_id", "consent_state",
    "context", "deleted_user_attributes", "device_info", "environment", "events",
    "integration_attributes", "ip", "job_id", "mp_deviceid", "mpid", "origin_mpid",
    "partner_identity", "sdk_version", "source_info", "source_request_id",
    "timestamp_unixtime_ms", "user_attributes", "user_identities",
})
_IDENTITY_KEYS = frozenset({
    "other", "customer_id", "facebook", "twitter", "google", "microsoft", "yahoo", "email",
    "alias", "facebook_custom_audience_id", "other_id_2", "other_id_3", "other_id_4",
})
_EVENT_TYPES = frozenset({
    "custom_event", "application_state_transition", "breadcrumb", "commerce_event",
    "crash_report", "first_run", "network_performance", "opt_out", "profile", "push_message",
    "push_registration", "screen_view", "session_end", "session_start", "uninstall",
    "user_attribute_change", "user_identity_change",
})
_CUSTOM_EVENT_TYPES = frozenset({"navigation", "location", "search", "transaction",
                                 "user_content", "user_preference", "social", "other", "media"})
_ENVIRONMENTS = frozenset({"development", "production"})
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{12}$")
_HOUR_MS = 3600 * 1000


@dataclass
class Limits:
    """The documented limits; tests may tighten one to play a stricter server."""

    max_request_bytes: int = 256 * 1024   # a request must be smaller than this
    max_batch_bytes: int = 128 * 1024
    max_batches: int = 100
    max_event_attributes: int = 100
    max_user_attributes: int = 100
    max_name_chars: int = 256
    max_value_chars: int = 4096
    historical_min_age_hours: float = 72.0


@dataclass
class MParticleState:
    """What the mParticle side received and kept; also its part of `/_sandbox/stats`."""

    credentials: frozenset[tuple[str, str]] = frozenset({(SANDBOX_MP_KEY, SANDBOX_MP_SECRET)})
    limits: Limits = field(default_factory=Limits)
    #: every batch received (valid or not, duplicates too), for tests to check against the
    #: published schema; bounded so a long benchmark does not grow without end
    record_limit: int = 200_000
    #: seconds to hold the answer after a request was processed: a slow response whose
    #: batches are already kept (tests use it to kill a client in exactly that window)
    answer_delay: float = 0.0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.requests_log: list[dict[str, Any]] = []
        self.accepted: list[dict[str, Any]] = []
        self.request_ids: set[str] = set()
        self.messages: Counter[str] = Counter()
        self.profiles: dict[str, dict[str, Any]] = {}
        self.counts: Counter[str] = Counter()
        self.batches_by_endpoint: Counter[str] = Counter()

    def reset(self) -> None:
        """Forget everything received, and restore the documented limits."""
        with self._lock:
            self._clear()
            self.limits = Limits()
            self.answer_delay = 0.0

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self.counts),
                "batches_by_endpoint": dict(self.batches_by_endpoint),
                "batches_received": len(self.received),
                "batches_accepted": self.counts["batches_accepted"],
                "duplicates_dropped": self.counts["duplicates_dropped"],
                "batches_refused": self.counts["batches_refused"],
                "messages": dict(self.messages),
                "messages_twice": sorted(m for m, n in self.messages.items() if n > 1),
                "limits": asdict(self.limits),
            }

    def batches_received(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self.received]

    # -- one request --------------------------------------------------------------------

    def authenticate(self, header: str | None) -> tuple[int, str] | None:
        if not header:
            return 401, "The authentication header is missing."
        scheme, _, value = header.strip().partition(" ")
        try:
            key, _, secret = base64.b64decode(value.strip(), validate=True).decode().partition(
                ":")
        except (ValueError, UnicodeDecodeError):
            return 403, "The authentication header is present, but invalid."
        if scheme.lower() != "basic" or (key, secret) not in self.credentials:
            return 403, "The authentication header is present, but invalid."
        return None

    def process(self, endpoint: str, raw: bytes, now_ms: int | None = None
                ) -> tuple[int, dict[str, Any] | None]:
        """The answer to one authenticated request (status, JSON body or None)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        with self._lock:
            self.counts[endpoint] += 1
            limits = self.limits
        if len(raw) >= limits.max_request_bytes:
            return _bad([f"Request body is {len(raw)} bytes; requests must be smaller than "
                         f"{limits.max_request_bytes} bytes."])
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return _bad(["The request JSON was malformed."])
        if endpoint == "events":
            batches = [data]
        elif not isinstance(data, list):
            return _bad(["The request body must be a JSON array of event batches."])
        elif not data:
            return _bad(["The request contains no event batches."])
        elif len(data) > limits.max_batches:
            return _bad([f"The request holds {len(data)} batches; at most "
                         f"{limits.max_batches} are allowed."])
        else:
            batches = data
        with self._lock:
            if len(self.requests_log) < self.record_limit:
                self.requests_log.append({"endpoint": endpoint, "bytes": len(raw),
                                          "batches": len(batches)})
        historical = endpoint == "historical"
        problems: list[str] = []
        good: list[dict[str, Any]] = []
        for i, batch in enumerate(batches):
            errors = check_batch(batch, limits, historical=historical, now_ms=now_ms)
            self._record(endpoint, batch, errors)
            if errors:
                srid = batch.get("source_request_id") if isinstance(batch, dict) else None
                problems += [f"batch {i}" + (f" ({srid})" if srid else "") + f": {e}"
                             for e in errors]
            else:
                good.append(batch)
        if not good:
            with self._lock:
                self.counts["batches_refused"] += len(batches)
            return _bad(problems)
        with self._lock:
            self.counts["batches_refused"] += len(batches) - len(good)
            for batch in good:
                self._take(endpoint, batch)
        return 202, ({"errors": [{"code": "BAD_REQUEST", "message": p} for p in problems]}
                     if problems else None)

    def _record(self, endpoint: str, batch: Any, errors: list[str]) -> None:
        with self._lock:
            if len(self.received) < self.record_limit:
                self.received.append({"endpoint": endpoint, "batch": batch,
                                      "errors": errors})

    def _take(self, endpoint: str, batch: dict[str, Any]) -> None:
        """Keep one valid batch (lock held): drop it if its source_request_id was seen."""
        srid = batch.get("source_request_id")
        if isinstance(srid, str) and srid:
            if srid in self.request_ids:
                self.counts["duplicates_dropped"] += 1
                return
            self.request_ids.add(srid)
        self.counts["batches_accepted"] += 1
        self.batches_by_endpoint[endpoint] += 1
        user = json.dumps([batch.get("user_identities") or {}, batch.get("mpid")],
                          sort_keys=True)
        profile = self.profiles.setdefault(user, {})
        profile.update(batch.get("user_attributes") or {})
        for event in batch.get("events") or []:
            data = event.get("data") or {}
            smid = data.get("source_message_id")
            if smid:
                self.messages[smid] += 1
            self.accepted.append({"endpoint": endpoint, "user": user,
                                  "source_request_id": srid, "event_type": event["event_type"],
                                  **data})


def _bad(messages: Iterable[str]) -> tuple[int, dict[str, Any]]:
    return 400, {"errors": [{"code": "BAD_REQUEST", "message": m} for m in messages]}


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bool | int | float)


def _check_attributes(attrs: Any, what: str, limit: int, limits: Limits,
                      arrays: bool) -> list[str]:
    if attrs is None:
        return []
    if not isinstance(attrs, dict):
        return [f"{what} must be an object."]
    errors = []
    if len(attrs) > limit:
        errors.append(f"{what} holds {len(attrs)} attributes; at most {limit} are allowed.")
    for name, value in attrs.items():
        if len(name) > limits.max_name_chars:
            errors.append(f"{what} name {name[:30]!r}… is longer than "
                          f"{limits.max_name_chars} characters.")
        values = value if arrays and isinstance(value, list) else [value]
        for v in values:
            if not _is_scalar(v):
                errors.append(f"{what} {name!r} must be a string, number or boolean.")
            elif isinstance(v, str) and len(v) > limits.max_value_chars:
                errors.append(f"{what} {name!r} is longer than {limits.max_value_chars} "
                              "characters.")
    return errors


def check_batch(batch: Any, limits: Limits, *, historical: bool, now_ms: int) -> list[str]:
    """Everything wrong with one batch, as mParticle-style messages (empty when fine)."""
    if not isinstance(batch, dict):
        return ["An event batch must be a JSON object."]
    errors = [f"Unknown field \"{k}\"." for k in batch if k not in _BATCH_FIELDS]
    if batch.get("environment") not in _ENVIRONMENTS:
        errors.append("Required field \"environment\" must be development or production.")
    identities = batch.get("user_identities")
    if identities is not None:
        if not isinstance(identities, dict):
            errors.append("user_identities must be an object.")
            identities = {}
        for key, value in identities.items():
            if key not in _IDENTITY_KEYS:
                errors.append(f"Unknown identity type \"{key}\".")
            elif not _is_scalar(value):
                errors.append(f"Identity \"{key}\" must be a string.")
    mpid = batch.get("mpid")
    if mpid is not None and (isinstance(mpid, bool) or not isinstance(mpid, int)):
        errors.append("mpid must be an integer.")
    if not identities and mpid is None and not batch.get("mp_deviceid") \
            and not batch.get("device_info"):
        errors.append("The batch names no user: give user_identities or mpid.")
    srid = batch.get("source_request_id")
    if srid is not None and not isinstance(srid, str):
        errors.append("source_request_id must be a string.")
    errors += _check_attributes(batch.get("user_attributes"), "user attribute",
                                limits.max_user_attributes, limits, arrays=True)
    events = batch.get("events")
    if events is not None and not isinstance(events, list):
        errors.append("events must be an array.")
        events = []
    for i, event in enumerate(events or []):
        errors += [f"event {i}: {e}" for e in _check_event(event, limits, historical, now_ms)]
    if historical and not events:
        errors.append("A batch sent to the historical endpoint must contain events.")
    size = len(json.dumps(batch, separators=(",", ":"), ensure_ascii=False).encode())
    if size > limits.max_batch_bytes:
        errors.append(f"The batch is {size} bytes; at most {limits.max_batch_bytes} are "
                      "allowed.")
    return errors


def _check_event(event: Any, limits: Limits, historical: bool, now_ms: int) -> list[str]:
    if not isinstance(event, dict):
        return ["An event must be a JSON object."]
    errors = [f"Unknown event field \"{k}\"." for k in event if k not in ("event_type", "data")]
    event_type = event.get("event_type")
    if not event_type:
        return errors + ["Required event field \"event_type\" is missing or empty."]
    if event_type not in _EVENT_TYPES:
        errors.append(f"Unknown event_type \"{event_type}\".")
    data = event.get("data")
    if not isinstance(data, dict):
        return errors + ["Required event field \"data\" is missing or not an object."]
    if event_type == "custom_event":
        if not isinstance(data.get("event_name"), str) or not data["event_name"]:
            errors.append("Required event field \"event_name\" is missing or empty.")
        if data.get("custom_event_type") not in _CUSTOM_EVENT_TYPES:
            errors.append("custom_event_type must be one of "
                          + ", ".join(sorted(_CUSTOM_EVENT_TYPES)) + ".")
    smid = data.get("source_message_id")
    if smid is not None and (not isinstance(smid, str) or not _UUID.match(smid)):
        errors.append("source_message_id must be a UUID.")
    ts = data.get("timestamp_unixtime_ms")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int)):
        errors.append("timestamp_unixtime_ms must be an integer.")
        ts = None
    if historical:
        if ts is None:
            errors.append("Events sent to the historical endpoint need timestamp_unixtime_ms.")
        elif now_ms - ts < limits.historical_min_age_hours * _HOUR_MS:
            errors.append("Events sent to the historical endpoint must be at least "
                          f"{limits.historical_min_age_hours:g} hours old.")
    errors += _check_attributes(data.get("custom_attributes"), "custom attribute",
                                limits.max_event_attributes, limits, arrays=False)
    return errors


# ---------------------------------------------------------------------------------------------
# Routes


def _json(status: int, body: dict[str, Any] | None,
          headers: dict[str, str] | None = None) -> web.Response:
    if body is None:
        return web.Response(status=status, headers=headers)
    return web.Response(status=status, text=json.dumps(body, ensure_ascii=False),
                        content_type="application/json", headers=headers)


def _cut(request: web.Request) -> web.Response:
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=204)  # never reaches the client


def _handler(endpoint: str, state: MParticleState, faults: FaultInjector) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        decision = faults.decide(f"mparticle_{endpoint}", raw)
        if decision.delay > 0:
            await asyncio.sleep(decision.delay)
        kind = decision.kind
        if kind == "cut":
            return _cut(request)
        if kind == "429":
            return _json(429, {"errors": [{"code": "TOO_MANY_REQUESTS",
                                           "message": "Rate limit exceeded."}]},
                         {"Retry-After": str(faults.plan.retry_after),
                          "X-mp-rate-limit-exceeded": "account"})
        if kind == "500":
            return _json(500, {"errors": [{"code": "INTERNAL_ERROR",
                                           "message": "Internal error (injected)."}]})
        if kind == "503":
            return _json(503, {"errors": [{"code": "SERVICE_UNAVAILABLE",
                                           "message": "Service unavailable (injected)."}]})
        denied = state.authenticate(request.headers.get("Authorization"))
        if denied is not None:
            return _json(denied[0], {"errors": [{"code": "UNAUTHORIZED"
                                                 if denied[0] == 401 else "FORBIDDEN",
                                                 "message": denied[1]}]})
        status, body = state.process(endpoint, raw)
        if state.answer_delay > 0:
            await asyncio.sleep(state.answer_delay)
        if kind == "apply_then_cut":
            return _cut(request)
        return _json(status, body)

    handler.__name__ = f"mparticle_{endpoint}_handler"
    return handler


def add_routes(app: web.Application, state: MParticleState, faults: FaultInjector) -> None:
    """Mount the three Events API paths on the sandbox app."""
    for endpoint, path in PATHS.items():
        app.router.add_post(path, _handler(endpoint, state, faults))
