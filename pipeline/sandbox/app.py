"""The sandbox's aiohttp application: the two Usermaven endpoints, fault injection, controls.

The mParticle Events API paths are mounted on the same app (`pipeline.sandbox.mparticle`).

aiohttp is used because a handler can close the connection without answering, which is how
`cut` and `apply_then_cut` faults look to a client (a dropped connection, never a 500).

Order of checks for a mutation, as the reference implies: auth (401) → payload shape (422) →
10 KB limit (422) → idempotency replay / 409 → unknown or deleted event (404) → system event
(422) → calendar month (422) → apply (200). Faults are decided before any of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from pipeline.sandbox import SANDBOX_TOKEN
from pipeline.sandbox.faults import FaultInjector, FaultPlan
from pipeline.sandbox.mparticle import MParticleState
from pipeline.sandbox.mparticle import add_routes as add_mparticle_routes
from pipeline.sandbox.store import EventStore, is_uuid
from pipeline.timeutil import TimestampError, parse_timestamp

MAX_ATTRIBUTES_BYTES = 10 * 1024
LOOKUP_PATH = "/v1/event-mutation/lookup"
MUTATION_PATH = "/v1/event-mutation"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+$")
_LOOKUP_FIELDS = ("event_type", "attribute_key", "attribute_value",
                  "from_timestamp", "to_timestamp")

Result = tuple[int, dict[str, Any]]


class SandboxState:
    """Everything a handler needs; also what `/_sandbox/stats` reports."""

    def __init__(self, store: EventStore, faults: FaultInjector, tokens: Iterable[str]) -> None:
        self.store = store
        self.faults = faults
        self.tokens = frozenset(tokens)
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter({"lookup": 0, "mutation": 0})
        self.mparticle = MParticleState()  # the mParticle Events API side (own counters)

    def count(self, endpoint: str) -> None:
        with self._lock:
            self.requests[endpoint] += 1

    def stats(self) -> dict[str, Any]:
        out = self.store.stats()
        with self._lock:
            out["requests"] = dict(self.requests)
        out["faults"] = self.faults.stats()
        out["mparticle"] = self.mparticle.stats()
        return out

    def reset(self) -> None:
        self.store.reset()
        self.faults.reset()
        self.mparticle.reset()
        with self._lock:
            self.requests = Counter({"lookup": 0, "mutation": 0})


STATE: web.AppKey[SandboxState] = web.AppKey("sandbox_state", SandboxState)


def _error(status: int, message: str) -> Result:
    return status, {"status": 0, "error": message}


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None
          ) -> web.Response:
    return web.Response(status=status, text=json.dumps(body, ensure_ascii=False),
                        content_type="application/json", headers=headers)


def _cut(request: web.Request) -> web.Response:
    """Close the connection without a response; aiohttp then fails to write and gives up."""
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response(status=204)  # never reaches the client


# ---------------------------------------------------------------------------------------------
# Auth and payload checks


def _authenticate(request: web.Request, body: Any, tokens: frozenset[str]) -> Result | None:
    """None when the highest-priority credential present (query > header > body) is valid."""
    if "token" in request.query:
        token: object = request.query["token"]
    elif "Authorization" in request.headers:
        scheme, _, value = request.headers["Authorization"].strip().partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else ""
    elif isinstance(body, dict) and "api_key" in body:
        token = body["api_key"]
    else:
        return _error(401, "missing token: pass ?token=, Authorization: Bearer, or api_key")
    if not isinstance(token, str) or not _TOKEN_RE.match(token):
        return _error(401, "malformed token: expected API_KEY.SERVER_TOKEN")
    if token not in tokens:
        return _error(401, "invalid token")
    return None


def _parse_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def _timestamp(body: dict[str, Any], name: str) -> Any:
    value = body.get(name)
    if not isinstance(value, str):
        return None
    try:
        return parse_timestamp(value)
    except TimestampError:
        return None


def attributes_size(attributes: dict[str, Any]) -> int:
    """Bytes of the attributes as compact UTF-8 JSON: what the 10 KB limit measures."""
    return len(json.dumps(attributes, separators=(",", ":"), ensure_ascii=False)
               .encode("utf-8", "surrogatepass"))


def _do_lookup(state: SandboxState, request: web.Request, body: Any) -> Result:
    denied = _authenticate(request, body, state.tokens)
    if denied:
        return denied
    if not isinstance(body, dict):
        return _error(422, "request body must be a JSON object")
    for name in _LOOKUP_FIELDS:
        if not isinstance(body.get(name), str):
            return _error(422, f"{name} is required and must be a string")
    start, end = _timestamp(body, "from_timestamp"), _timestamp(body, "to_timestamp")
    if start is None:
        return _error(422, "from_timestamp must be an ISO 8601 datetime")
    if end is None:
        return _error(422, "to_timestamp must be an ISO 8601 datetime")
    if start > end:
        return _error(422, "from_timestamp is after to_timestamp")
    data = state.store.lookup(body["event_type"], body["attribute_key"],
                              body["attribute_value"], start, end)
    return 200, {"data": data}


def _do_mutation(state: SandboxState, request: web.Request, body: Any) -> Result:
    denied = _authenticate(request, body, state.tokens)
    if denied:
        return denied
    if not isinstance(body, dict):
        return _error(422, "request body must be a JSON object")
    if not is_uuid(body.get("event_id")):
        return _error(422, "event_id is required and must be a UUID string")
    when = _timestamp(body, "timestamp")
    if when is None:
        return _error(422, "timestamp is required and must be an ISO 8601 datetime")
    attributes = body.get("event_attributes")
    if not isinstance(attributes, dict):
        return _error(422, "event_attributes is required and must be an object")
    key = body.get("idempotency_key")
    if not isinstance(key, str) or not key:
        return _error(422, "idempotency_key is required and must be a non-empty string")
    merge_mode = body.get("merge_mode", "merge")
    if merge_mode not in ("merge", "replace"):
        return _error(422, "merge_mode must be 'merge' or 'replace'")
    size = attributes_size(attributes)
    if size > MAX_ATTRIBUTES_BYTES:
        return _error(422, f"event_attributes is {size} bytes, over the 10 KB limit")
    outcome = state.store.mutate(body["event_id"], when, attributes, merge_mode, key)
    return outcome.status, outcome.body


# ---------------------------------------------------------------------------------------------
# Handlers


def _api_handler(endpoint: str, process: Callable[[SandboxState, web.Request, Any], Result]
                 ) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        state.count(endpoint)
        raw = await request.read()
        decision = state.faults.decide(endpoint, raw)
        kind = decision.kind
        result = None
        if kind not in ("cut", "429", "500", "503"):
            result = process(state, request, _parse_body(raw))
        # the configured latency is arrival to answer, our own processing included, so
        # concurrent requests do not queue behind each other's work after their sleep
        if (remaining := decision.delay - (loop.time() - arrived)) > 0:
            await asyncio.sleep(remaining)
        if kind in ("cut", "apply_then_cut"):
            return _cut(request)
        if kind == "429":
            return _json(429, {"status": 0, "error": "rate limit exceeded"},
                         {"Retry-After": str(state.faults.plan.retry_after)})
        if kind == "500":
            return _json(500, {"status": 0, "error": "internal mutation failure (injected)"})
        if kind == "503":
            return _json(503, {"status": 0, "error": "service unavailable (injected)"})
        assert result is not None
        status, payload = result
        return _json(status, payload)

    handler.__name__ = f"{endpoint}_handler"
    return handler


def _loopback_only(request: web.Request) -> None:
    try:
        ok = ipaddress.ip_address((request.remote or "").split("%")[0]).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise web.HTTPForbidden(text="sandbox controls are loopback only")


async def _stats(request: web.Request) -> web.Response:
    _loopback_only(request)
    return _json(200, request.app[STATE].stats())


async def _event(request: web.Request) -> web.Response:
    _loopback_only(request)
    event = request.app[STATE].store.get(request.match_info["event_id"])
    if event is None:
        return _json(404, {"status": 0, "error": "event not found"})
    return _json(200, event.as_api(committed=True))


def _faults_body(state: SandboxState) -> dict[str, Any]:
    return {"faults": dataclasses.asdict(state.faults.plan),
            "propagation_delay": state.store.propagation_delay}


async def _get_faults(request: web.Request) -> web.Response:
    _loopback_only(request)
    return _json(200, _faults_body(request.app[STATE]))


async def _set_faults(request: web.Request) -> web.Response:
    """Body: any FaultPlan fields to change, plus optionally `propagation_delay` (seconds)."""
    _loopback_only(request)
    state = request.app[STATE]
    changes = _parse_body(await request.read())
    if not isinstance(changes, dict):
        return _json(400, {"status": 0, "error": "body must be a JSON object"})
    delay = changes.pop("propagation_delay", None)
    try:
        if delay is not None and (isinstance(delay, bool)
                                  or not isinstance(delay, int | float) or delay < 0):
            raise ValueError("propagation_delay must be a non-negative number")
        plan = state.faults.plan.replace(changes)
    except (ValueError, TypeError) as exc:
        return _json(400, {"status": 0, "error": str(exc)})
    state.faults.plan = plan
    if delay is not None:
        state.store.propagation_delay = float(delay)
    return _json(200, _faults_body(state))


async def _reset(request: web.Request) -> web.Response:
    _loopback_only(request)
    request.app[STATE].reset()
    return _json(200, {"status": 1})


async def _forget_keys(request: web.Request) -> web.Response:
    """Simulate the provider pruning idempotency keys (they are not promised to live forever)."""
    _loopback_only(request)
    return _json(200, {"status": 1, "forgotten": request.app[STATE].store.forget_keys()})


def make_app(
    store: EventStore,
    faults: FaultPlan | FaultInjector | None = None,
    tokens: Iterable[str] | None = None,
) -> web.Application:
    """The sandbox application. `tokens` defaults to {SANDBOX_TOKEN}."""
    injector = faults if isinstance(faults, FaultInjector) else FaultInjector(faults)
    app = web.Application()
    app[STATE] = SandboxState(store, injector, {SANDBOX_TOKEN} if tokens is None else tokens)
    app.router.add_post(LOOKUP_PATH, _api_handler("lookup", _do_lookup))
    app.router.add_post(MUTATION_PATH, _api_handler("mutation", _do_mutation))
    app.router.add_get("/_sandbox/stats", _stats)
    app.router.add_get("/_sandbox/events/{event_id}", _event)
    app.router.add_get("/_sandbox/faults", _get_faults)
    app.router.add_post("/_sandbox/faults", _set_faults)
    app.router.add_post("/_sandbox/reset", _reset)
    app.router.add_post("/_sandbox/forget-keys", _forget_keys)
    add_mparticle_routes(app, app[STATE].mparticle, injector)
    return app
