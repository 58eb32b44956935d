"""The sandbox's mParticle Events API, spoken to directly over HTTP."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from conftest import shared_file

from pipeline.sandbox.app import STATE
from pipeline.sandbox.mparticle import SANDBOX_MP_KEY, SANDBOX_MP_SECRET, MParticleState

SAMPLE = "specs/mparticle/mparticle.inbound.eventsapi.sample.json"
AUTH = {"Authorization": "Basic " + base64.b64encode(
    f"{SANDBOX_MP_KEY}:{SANDBOX_MP_SECRET}".encode()).decode()}
HOUR_MS = 3600 * 1000


def now_ms() -> int:
    return int(time.time() * 1000)


def state(sandbox) -> MParticleState:
    return sandbox.app[STATE].mparticle


def batch(user: str = "C-1", *, age_ms: int = 0, **extra: Any) -> dict[str, Any]:
    return {"environment": "production", "user_identities": {"customer_id": user},
            "source_request_id": str(uuid.uuid4()),
            "events": [{"event_type": "custom_event", "data": {
                "event_name": "event_correction", "custom_event_type": "other",
                "source_message_id": str(uuid.uuid4()),
                "timestamp_unixtime_ms": now_ms() - age_ms,
                "custom_attributes": {"final_price": "1.00"}}}], **extra}


def post(sandbox, body: Any, path: str = "/v2/bulkevents",
         headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(sandbox.url + path, content=content,
                      headers=AUTH if headers is None else headers, timeout=10)


def messages(response: httpx.Response) -> str:
    return " ".join(e["message"] for e in response.json()["errors"])


def test_a_well_formed_bulk_request_is_accepted_with_202(sandbox):
    """Two valid batches: 202, both kept, each message counted once."""
    r = post(sandbox, [batch("a"), batch("b")])
    assert r.status_code == 202
    stats = sandbox.stats()["mparticle"]
    assert stats["batches_accepted"] == 2 and len(stats["messages"]) == 2


def test_missing_auth_is_401_and_a_wrong_secret_403(sandbox):
    """The reference: 401 when the header is missing, 403 when it is present but invalid."""
    assert post(sandbox, [batch()], headers={}).status_code == 401
    wrong = "Basic " + base64.b64encode(f"{SANDBOX_MP_KEY}:nope".encode()).decode()
    r = post(sandbox, [batch()], headers={"Authorization": wrong})
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "FORBIDDEN"
    assert sandbox.stats()["mparticle"]["batches_accepted"] == 0


@pytest.mark.parametrize(("change", "fragment"), [
    ({"schema_version": 2}, 'Unknown field "schema_version"'),
    ({"environment": "staging"}, '"environment"'),
    ({"user_identities": {"customerid": "1"}}, 'Unknown identity type "customerid"'),
    ({"user_identities": None}, "names no user"),
    ({"mpid": "12"}, "mpid must be an integer"),
    ({"user_attributes": {f"a{i}": 1 for i in range(101)}}, "at most 100"),
])
def test_batch_shape_problems_are_400_with_mparticles_error_body(sandbox, change, fragment):
    """Each documented field rule answers 400 {"errors": [{"code", "message"}]}."""
    r = post(sandbox, [{**batch(), **change}])
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] == "BAD_REQUEST"
    assert fragment in messages(r)


@pytest.mark.parametrize(("data", "fragment"), [
    ({"event_name": ""}, '"event_name" is missing'),
    ({"custom_event_type": "attribution"}, "custom_event_type must be one of"),
    ({"source_message_id": "corr-v1-1"}, "must be a UUID"),
    ({"custom_attributes": {"n" * 257: "1"}}, "longer than 256 characters"),
    ({"custom_attributes": {"v": "x" * 4097}}, "longer than 4096 characters"),
    ({"custom_attributes": {f"a{i}": "1" for i in range(101)}}, "at most 100"),
    ({"custom_attributes": {"o": {"nested": 1}}}, "must be a string, number or boolean"),
])
def test_event_problems_are_refused(sandbox, data, fragment):
    """Custom events need a name, a known type, a UUID message id, attributes within limits."""
    b = batch()
    b["events"][0]["data"].update(data)
    r = post(sandbox, [b])
    assert r.status_code == 400 and fragment in messages(r)


def test_an_unknown_event_type_is_refused(sandbox):
    """`event_type` must be one the schema knows."""
    b = batch()
    b["events"][0]["event_type"] = "correction"
    assert "Unknown event_type" in messages(post(sandbox, [b]))


def test_request_limits_100_batches_and_256_kb(sandbox):
    """101 batches, or a body of 256 KB or more, are refused whole."""
    assert post(sandbox, [batch(f"u{i}") for i in range(100)]).status_code == 202
    r = post(sandbox, [batch(f"v{i}") for i in range(101)])
    assert r.status_code == 400 and "at most 100" in messages(r)
    big = [batch(f"w{i}", user_attributes={"note": "x" * 4000}) for i in range(70)]
    r = post(sandbox, big)
    assert r.status_code == 400 and "smaller than 262144" in messages(r)


def test_a_batch_over_128_kb_is_refused(sandbox):
    """One user's batch above 128 KB is refused even when each value is within limits."""
    b = batch()
    b["events"] = b["events"] * 40
    for e in b["events"]:
        e["data"] = {**e["data"], "custom_attributes": {"v": "x" * 4000}}
    r = post(sandbox, b, path="/v2/events")
    assert r.status_code == 400 and "at most 131072" in messages(r)


def test_historical_refuses_young_events_missing_times_and_empty_batches(sandbox):
    """/historical: every event ≥ 72 h old with a timestamp, and at least one event."""
    old = batch(age_ms=31 * 24 * HOUR_MS)
    assert post(sandbox, [old], "/v2/bulkevents/historical").status_code == 202
    r = post(sandbox, [batch(age_ms=71 * HOUR_MS)], "/v2/bulkevents/historical")
    assert r.status_code == 400 and "at least 72 hours old" in messages(r)
    untimed = batch(age_ms=31 * 24 * HOUR_MS)
    del untimed["events"][0]["data"]["timestamp_unixtime_ms"]
    r = post(sandbox, [untimed], "/v2/bulkevents/historical")
    assert r.status_code == 400 and "need timestamp_unixtime_ms" in messages(r)
    r = post(sandbox, [{**batch(), "events": []}], "/v2/bulkevents/historical")
    assert r.status_code == 400 and "must contain events" in messages(r)
    assert post(sandbox, [batch(age_ms=HOUR_MS)]).status_code == 202  # bulk takes it


def test_a_repeated_source_request_id_is_dropped_as_a_duplicate(sandbox):
    """The same batch twice: 202 both times, kept once, its message counted once."""
    b = batch()
    assert post(sandbox, [b]).status_code == 202
    assert post(sandbox, [b]).status_code == 202
    stats = sandbox.stats()["mparticle"]
    assert stats["batches_accepted"] == 1 and stats["duplicates_dropped"] == 1
    assert stats["messages_twice"] == []


def test_some_bad_batches_in_a_bulk_request_still_get_202_and_are_named(sandbox):
    """The reference: 202 even when some batches fail; the body names the failed batch."""
    bad = {**batch("bad"), "schema_version": 2}
    r = post(sandbox, [batch("good"), bad])
    assert r.status_code == 202
    assert bad["source_request_id"] in messages(r)
    stats = sandbox.stats()["mparticle"]
    assert stats["batches_accepted"] == 1 and stats["batches_refused"] == 1


def test_single_batch_endpoint_takes_one_object(sandbox):
    """/v2/events accepts one batch object (not an array)."""
    assert post(sandbox, batch(), "/v2/events").status_code == 202
    assert post(sandbox, [batch()], "/v2/events").status_code == 400


def test_mparticles_own_sample_batch_is_accepted(sandbox):
    """The published sample (its fields, identities and event types) passes the sandbox."""
    sample = json.loads(shared_file(SAMPLE).read_text(encoding="utf-8"))
    r = post(sandbox, sample, "/v2/events")
    assert r.status_code == 202, r.text


def test_malformed_json_is_400(sandbox):
    """Not JSON at all: 400 with mParticle's wording."""
    r = post(sandbox, b"{not json")
    assert r.status_code == 400 and "malformed" in messages(r)


def test_injected_429_carries_retry_after_and_the_limit_name(sandbox):
    """The same fault plan as Usermaven's: a 429 names the limit hit."""
    sandbox.set_faults(rate_429=1.0, retry_after=3)
    r = post(sandbox, [batch()])
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "3"
    assert r.headers["X-mp-rate-limit-exceeded"] == "account"
    assert sandbox.stats()["faults"]["429"] == 1


def test_stats_and_reset_cover_the_mparticle_side(sandbox):
    """/_sandbox/stats has an `mparticle` key; reset forgets batches and restores limits."""
    post(sandbox, [batch()])
    state(sandbox).limits.max_batches = 1
    stats = httpx.get(sandbox.url + "/_sandbox/stats").json()["mparticle"]
    assert stats["batches_by_endpoint"] == {"bulkevents": 1}
    assert stats["limits"]["max_batches"] == 1
    httpx.post(sandbox.url + "/_sandbox/reset")
    stats = sandbox.stats()["mparticle"]
    assert stats["batches_received"] == 0 and stats["limits"]["max_batches"] == 100
