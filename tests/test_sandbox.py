"""The sandbox behaves as the Usermaven Event mutations reference documents, faults included.

Every test talks to a real loopback server (SandboxServer) through httpx.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipeline.sandbox import (
    SANDBOX_TOKEN,
    Event,
    EventStore,
    FaultPlan,
    SandboxServer,
    load_events,
    start_subprocess,
)
from pipeline.sandbox.command import sandbox_command

LOOKUP = "/v1/event-mutation/lookup"
MUTATE = "/v1/event-mutation"
AUTH = {"Authorization": f"Bearer {SANDBOX_TOKEN}"}
SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def eid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


ORDER = eid(1)          # order_completed ORD-123, 2026-03-10 14:30:00
BOUNDARY = eid(2)       # order_completed ORD-124, last second of March
DELETED = eid(3)        # order_completed ORD-125, deleted
TYPED = eid(4)          # order_completed with int, float and bool attributes
SYSTEM_TYPES = ["$pageview", "$autocapture", "pageview", "user_identify", "group", "lead"]


def make_events() -> list[Event]:
    events = [
        Event(ORDER, "order_completed", ts("2026-03-10 14:30:00"), False,
              {"order_id": "ORD-123", "price": "99.99", "currency": "USD"}),
        Event(BOUNDARY, "order_completed", ts("2026-03-31 23:59:59"), False,
              {"order_id": "ORD-124", "price": "10.00"}),
        Event(DELETED, "order_completed", ts("2026-03-05 08:00:00"), True,
              {"order_id": "ORD-125", "price": "5.00"}),
        Event(TYPED, "order_completed", ts("2026-03-12 09:00:00"), False,
              {"order_id": "ORD-126", "qty": 3, "total": 149.99, "gift": True}),
    ]
    # 12 promo events on distinct days, plus two more sharing one timestamp (tie-break test).
    for day in range(1, 13):
        events.append(Event(eid(100 + day), "promo", ts(f"2026-03-{day:02d} 12:00:00"), False,
                            {"campaign": "spring"}))
    for n in (202, 201):
        events.append(Event(eid(n), "promo", ts("2026-03-20 12:00:00"), False,
                            {"campaign": "tie"}))
    for i, event_type in enumerate(SYSTEM_TYPES):
        events.append(Event(eid(300 + i), event_type, ts("2026-03-15 10:00:00"), False,
                            {"order_id": "SYS"}))
    return events


def lookup_body(value: str = "ORD-123", *, event_type: str = "order_completed",
                key: str = "order_id", start: str = "2026-03-01T00:00:00.000Z",
                end: str = "2026-03-31T23:59:59.999Z") -> dict[str, Any]:
    return {"event_type": event_type, "attribute_key": key, "attribute_value": value,
            "from_timestamp": start, "to_timestamp": end}


def mutation_body(event_id: str = ORDER, key: str = "k-1", attrs: dict[str, Any] | None = None,
                  timestamp: str = "2026-03-10T14:30:00.000Z", **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "timestamp": timestamp,
            "event_attributes": {"price": "149.99"} if attrs is None else attrs,
            "idempotency_key": key, **extra}


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    store = EventStore(make_events(), used_keys={"legacy-fix-001": ORDER})
    with SandboxServer(store, tokens={SANDBOX_TOKEN, "other-key.other-token"}) as sandbox:
        yield sandbox


@pytest.fixture
def client(server: SandboxServer) -> Iterator[httpx.Client]:
    """A client with the right Bearer token, against a freshly reset server."""
    server.reset()
    server.faults.plan = FaultPlan()
    server.store.propagation_delay = 0.0
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=5) as c:
        yield c


def attrs_of(client: httpx.Client, event_id: str) -> dict[str, Any]:
    return client.get(f"/_sandbox/events/{event_id}").json()["event_attributes"]


# ---------------------------------------------------------------------------------------------
# Authentication


@pytest.mark.parametrize("where", ["query", "header", "body"])
def test_each_documented_auth_method_is_accepted(server: SandboxServer, where: str) -> None:
    """A valid token is accepted in the query, the Bearer header or the body api_key."""
    body = lookup_body()
    params, headers = {}, {}
    if where == "query":
        params = {"token": SANDBOX_TOKEN}
    elif where == "header":
        headers = AUTH
    else:
        body["api_key"] = SANDBOX_TOKEN
    with httpx.Client(base_url=server.url) as c:
        r = c.post(LOOKUP, json=body, params=params, headers=headers)
    assert r.status_code == 200, r.text


def test_missing_token_is_401_with_json_error(server: SandboxServer) -> None:
    """No credential anywhere gives 401 with a JSON error body."""
    with httpx.Client(base_url=server.url) as c:
        r = c.post(MUTATE, json=mutation_body())
    assert r.status_code == 401
    assert r.json()["status"] == 0 and "token" in r.json()["error"]


@pytest.mark.parametrize("token", ["nodot", "a.b.c", ".server", "key.", "a b.c"])
def test_token_not_in_api_key_dot_server_token_format_is_401(server: SandboxServer,
                                                             token: str) -> None:
    """A token that is not API_KEY.SERVER_TOKEN is refused with 401."""
    with httpx.Client(base_url=server.url) as c:
        r = c.post(LOOKUP, json=lookup_body(), headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert "API_KEY.SERVER_TOKEN" in r.json()["error"]


def test_well_formed_unknown_token_is_401(server: SandboxServer) -> None:
    """A well-formed token that is not accepted gives 401."""
    with httpx.Client(base_url=server.url) as c:
        r = c.post(LOOKUP, json=lookup_body(), params={"token": "nope.nope"})
    assert r.status_code == 401


def test_wrong_query_token_is_401_even_with_right_header(server: SandboxServer) -> None:
    """The query token has priority: when present it alone is judged."""
    with httpx.Client(base_url=server.url) as c:
        r = c.post(LOOKUP, json=lookup_body(), params={"token": "bad.token"}, headers=AUTH)
    assert r.status_code == 401


def test_wrong_header_is_401_even_with_right_body_key(server: SandboxServer) -> None:
    """The header has priority over the body api_key."""
    body = dict(lookup_body(), api_key=SANDBOX_TOKEN)
    with httpx.Client(base_url=server.url) as c:
        r = c.post(LOOKUP, json=body, headers={"Authorization": "Bearer bad.token"})
    assert r.status_code == 401


def test_right_header_wins_over_wrong_body_key(server: SandboxServer) -> None:
    """A valid header is used even when the body carries a wrong api_key."""
    body = dict(lookup_body(), api_key="bad.token")
    with httpx.Client(base_url=server.url) as c:
        r = c.post(LOOKUP, json=body, headers=AUTH)
    assert r.status_code == 200


def test_non_bearer_authorization_header_is_401(server: SandboxServer) -> None:
    """An Authorization header that is not Bearer counts as a present, wrong credential."""
    with httpx.Client(base_url=server.url) as c:
        r = c.post(LOOKUP, json=dict(lookup_body(), api_key=SANDBOX_TOKEN),
                   headers={"Authorization": f"Basic {SANDBOX_TOKEN}"})
    assert r.status_code == 401


def test_extra_configured_token_is_accepted(server: SandboxServer) -> None:
    """Every token in the server's accepted set works."""
    with httpx.Client(base_url=server.url) as c:
        r = c.post(LOOKUP, json=lookup_body(), params={"token": "other-key.other-token"})
    assert r.status_code == 200


# ---------------------------------------------------------------------------------------------
# Lookup


def test_lookup_returns_documented_shape(client: httpx.Client) -> None:
    """Lookup answers {"data": [...]} with _timestamp as YYYY-MM-DD HH:MM:SS and _is_deleted."""
    r = client.post(LOOKUP, json=lookup_body())
    assert r.status_code == 200
    assert r.json() == {"data": [{
        "event_id": ORDER, "event_type": "order_completed",
        "event_attributes": {"order_id": "ORD-123", "price": "99.99", "currency": "USD"},
        "_timestamp": "2026-03-10 14:30:00", "_is_deleted": 0}]}


def test_lookup_returns_at_most_10_newest_first(client: httpx.Client) -> None:
    """Of 12 matches the lookup returns the 10 newest, newest first."""
    data = client.post(LOOKUP, json=lookup_body("spring", event_type="promo",
                                                key="campaign")).json()["data"]
    assert [d["event_id"] for d in data] == [eid(100 + day) for day in range(12, 2, -1)]


def test_lookup_ties_are_ordered_by_event_id(client: httpx.Client) -> None:
    """Events with the same timestamp come back in ascending event_id order."""
    data = client.post(LOOKUP, json=lookup_body("tie", event_type="promo",
                                                key="campaign")).json()["data"]
    assert [d["event_id"] for d in data] == [eid(201), eid(202)]


def test_lookup_window_bounds_are_inclusive(client: httpx.Client) -> None:
    """An event exactly at from_timestamp or to_timestamp is included; one outside is not."""
    body = lookup_body("spring", event_type="promo", key="campaign",
                       start="2026-03-03T12:00:00Z", end="2026-03-05T12:00:00Z")
    data = client.post(LOOKUP, json=body).json()["data"]
    assert [d["event_id"] for d in data] == [eid(105), eid(104), eid(103)]


def test_lookup_returns_deleted_events_flagged(client: httpx.Client) -> None:
    """A deleted event is still returned, with _is_deleted = 1."""
    data = client.post(LOOKUP, json=lookup_body("ORD-125")).json()["data"]
    assert [(d["event_id"], d["_is_deleted"]) for d in data] == [(DELETED, 1)]


@pytest.mark.parametrize(("key", "value"), [("qty", "3"), ("total", "149.99"), ("gift", "true")])
def test_lookup_compares_non_string_values_by_text(client: httpx.Client, key: str,
                                                   value: str) -> None:
    """Numbers and booleans match their JSON text (3, 149.99, true)."""
    data = client.post(LOOKUP, json=lookup_body(value, key=key)).json()["data"]
    assert [d["event_id"] for d in data] == [TYPED]


def test_lookup_with_empty_attribute_key_matches_every_event_of_the_type(
        client: httpx.Client) -> None:
    """An empty attribute_key means no attribute filter."""
    data = client.post(LOOKUP, json=lookup_body("", key="")).json()["data"]
    assert {d["event_id"] for d in data} == {ORDER, BOUNDARY, DELETED, TYPED}


def test_lookup_no_match_returns_empty_data(client: httpx.Client) -> None:
    """A lookup without matches answers 200 with an empty list."""
    r = client.post(LOOKUP, json=lookup_body("ORD-999"))
    assert r.status_code == 200 and r.json() == {"data": []}


@pytest.mark.parametrize("change", [
    {"event_type": None}, {"attribute_key": 5}, {"attribute_value": None},
    {"from_timestamp": "yesterday"}, {"to_timestamp": None},
    {"from_timestamp": "2026-04-01T00:00:00Z"},
])
def test_lookup_bad_payload_is_422(client: httpx.Client, change: dict[str, Any]) -> None:
    """Missing, mistyped or unparseable lookup fields (or from > to) give 422."""
    r = client.post(LOOKUP, json={**lookup_body(), **change})
    assert r.status_code == 422
    assert r.json()["status"] == 0 and r.json()["error"]


# ---------------------------------------------------------------------------------------------
# Mutation


def test_mutation_success_response_and_merge(client: httpx.Client) -> None:
    """A merge mutation answers status 1 with a new mutation_id and keeps other keys."""
    r = client.post(MUTATE, json=mutation_body(merge_mode="merge"))
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == 1 and body["event_id"] == ORDER
    assert len(body["mutation_id"]) == 36
    assert attrs_of(client, ORDER) == {"order_id": "ORD-123", "price": "149.99",
                                       "currency": "USD"}


def test_merge_is_the_default_mode(client: httpx.Client) -> None:
    """Without merge_mode the attributes are merged."""
    client.post(MUTATE, json=mutation_body(attrs={"discount_code": "SPRING20"}))
    assert attrs_of(client, ORDER) == {"order_id": "ORD-123", "price": "99.99",
                                       "currency": "USD", "discount_code": "SPRING20"}


def test_replace_mode_replaces_the_whole_object(client: httpx.Client) -> None:
    """merge_mode replace leaves exactly the given attributes."""
    r = client.post(MUTATE, json=mutation_body(merge_mode="replace"))
    assert r.status_code == 200
    assert attrs_of(client, ORDER) == {"price": "149.99"}


def test_mutation_is_visible_to_lookup(client: httpx.Client) -> None:
    """With no propagation delay a lookup sees the new attributes at once."""
    client.post(MUTATE, json=mutation_body())
    data = client.post(LOOKUP, json=lookup_body()).json()["data"]
    assert data[0]["event_attributes"]["price"] == "149.99"
    # The index follows changed lookup attributes too.
    client.post(MUTATE, json=mutation_body(key="k-2", attrs={"order_id": "ORD-777"}))
    assert client.post(LOOKUP, json=lookup_body()).json()["data"] == []
    assert len(client.post(LOOKUP, json=lookup_body("ORD-777")).json()["data"]) == 1


@pytest.mark.parametrize(("timestamp", "status"), [
    ("2026-03-31T23:59:59Z", 200),
    ("2026-03-01T00:00:00.000Z", 200),
    ("2026-04-01T01:30:00+02:00", 200),     # = 2026-03-31 23:30 UTC
    ("2026-04-01T00:00:00Z", 422),
    ("2026-02-28T23:59:59Z", 422),
    ("2025-03-31T23:59:59Z", 422),
])
def test_timestamp_must_be_in_the_events_calendar_month_utc(client: httpx.Client,
                                                            timestamp: str,
                                                            status: int) -> None:
    """The mutation timestamp must fall in the event's calendar month (UTC), else 422."""
    r = client.post(MUTATE, json=mutation_body(BOUNDARY, timestamp=timestamp))
    assert r.status_code == status, r.text
    if status == 422:
        assert "calendar month" in r.json()["error"]
        assert attrs_of(client, BOUNDARY)["price"] == "10.00"


def test_attributes_of_exactly_10_kb_are_accepted(client: httpx.Client) -> None:
    """Compact UTF-8 JSON of 10240 bytes is within the limit."""
    overhead = len(json.dumps({"blob": ""}, separators=(",", ":")))
    r = client.post(MUTATE, json=mutation_body(attrs={"blob": "x" * (10240 - overhead)}))
    assert r.status_code == 200


def test_attributes_over_10_kb_as_utf8_are_422(client: httpx.Client) -> None:
    """The limit counts UTF-8 bytes: 3415 'é' (2 bytes each) push 10240 characters over it."""
    overhead = len(json.dumps({"blob": ""}, separators=(",", ":")))
    text = "é" * 3415 + "x" * (10240 - overhead - 2 * 3415 + 1)
    r = client.post(MUTATE, json=mutation_body(attrs={"blob": text}))
    assert r.status_code == 422
    assert "10 KB" in r.json()["error"]


@pytest.mark.parametrize("index", range(len(SYSTEM_TYPES)))
def test_system_events_cannot_be_mutated(client: httpx.Client, index: int) -> None:
    """$-prefixed events, pageview, user_identify, group and lead give 422."""
    r = client.post(MUTATE, json=mutation_body(eid(300 + index),
                                               timestamp="2026-03-15T10:00:00Z"))
    assert r.status_code == 422
    assert "system event" in r.json()["error"]


def test_unknown_event_is_404(client: httpx.Client) -> None:
    """An event_id the store does not hold gives 404."""
    r = client.post(MUTATE, json=mutation_body(eid(999)))
    assert r.status_code == 404 and r.json() == {"status": 0, "error": "event not found"}


def test_deleted_event_is_404(client: httpx.Client) -> None:
    """A deleted event cannot be mutated: 404."""
    r = client.post(MUTATE, json=mutation_body(DELETED, timestamp="2026-03-05T08:00:00Z"))
    assert r.status_code == 404


@pytest.mark.parametrize("change", [
    {"event_id": "not-a-uuid"}, {"event_id": None}, {"timestamp": "March 10"},
    {"timestamp": None}, {"event_attributes": ["price"]}, {"event_attributes": None},
    {"idempotency_key": ""}, {"idempotency_key": 7}, {"merge_mode": "upsert"},
    {"merge_mode": None},
])
def test_invalid_mutation_payload_is_422(client: httpx.Client, change: dict[str, Any]) -> None:
    """Wrong or missing required fields, or an unknown merge_mode, give 422 and apply nothing."""
    r = client.post(MUTATE, json={**mutation_body(), **change})
    assert r.status_code == 422
    assert r.json()["status"] == 0
    assert attrs_of(client, ORDER)["price"] == "99.99"


def test_body_that_is_not_a_json_object_is_422(client: httpx.Client) -> None:
    """A body that is not a JSON object (or not JSON) gives 422 once authenticated."""
    for content in (b"[1, 2]", b"{not json"):
        r = client.post(MUTATE, content=content, headers={"Content-Type": "application/json"})
        assert r.status_code == 422


def test_auth_is_checked_before_the_payload(server: SandboxServer) -> None:
    """An invalid payload with a bad token gives 401, not 422."""
    with httpx.Client(base_url=server.url) as c:
        r = c.post(MUTATE, json={"event_id": "x"}, params={"token": "bad.token"})
    assert r.status_code == 401


# ---------------------------------------------------------------------------------------------
# Idempotency


def test_same_key_same_event_replays_the_original_response(client: httpx.Client,
                                                           server: SandboxServer) -> None:
    """A retry with the same key returns the original response and applies nothing."""
    first = client.post(MUTATE, json=mutation_body(key="retry-me"))
    again = client.post(MUTATE, json=mutation_body(key="retry-me", attrs={"price": "1.00"}))
    assert again.status_code == 200
    assert again.json() == first.json()
    assert attrs_of(client, ORDER)["price"] == "149.99"
    assert server.stats()["applications"] == {"retry-me": 1}


def test_same_key_other_event_is_409(client: httpx.Client) -> None:
    """Reusing a key with another event_id gives 409 and applies nothing."""
    client.post(MUTATE, json=mutation_body(key="shared"))
    r = client.post(MUTATE, json=mutation_body(TYPED, key="shared",
                                               timestamp="2026-03-12T09:00:00Z"))
    assert r.status_code == 409 and r.json()["status"] == 0
    assert "price" not in attrs_of(client, TYPED)


def test_idempotency_is_checked_before_event_rules(client: httpx.Client) -> None:
    """A replayed key answers 200 even if the retry's timestamp would now be refused."""
    first = client.post(MUTATE, json=mutation_body(key="early"))
    again = client.post(MUTATE, json=mutation_body(key="early", timestamp="2026-07-01T00:00:00Z"))
    assert again.json() == first.json()
    r = client.post(MUTATE, json=mutation_body(eid(999), key="early"))
    assert r.status_code == 409


def test_size_limit_is_checked_before_idempotency(client: httpx.Client) -> None:
    """An oversize payload is 422 even when its key was used before."""
    client.post(MUTATE, json=mutation_body(key="sized"))
    r = client.post(MUTATE, json=mutation_body(key="sized", attrs={"b": "x" * 20000}))
    assert r.status_code == 422


def test_failed_requests_do_not_consume_the_key(client: httpx.Client) -> None:
    """A 4xx is not remembered: the same key later succeeds with a valid request."""
    bad = client.post(MUTATE, json=mutation_body(key="fixable",
                                                 timestamp="2026-05-01T00:00:00Z"))
    assert bad.status_code == 422
    good = client.post(MUTATE, json=mutation_body(key="fixable"))
    assert good.status_code == 200 and good.json()["status"] == 1


def test_preloaded_used_key_conflicts_with_another_event(client: httpx.Client) -> None:
    """A key preloaded as used by an earlier tool gives 409 on another event."""
    r = client.post(MUTATE, json=mutation_body(TYPED, key="legacy-fix-001",
                                               timestamp="2026-03-12T09:00:00Z"))
    assert r.status_code == 409


def test_preloaded_used_key_replays_on_its_own_event(client: httpx.Client,
                                                     server: SandboxServer) -> None:
    """A preloaded key on its own event replays a success and applies nothing."""
    r = client.post(MUTATE, json=mutation_body(ORDER, key="legacy-fix-001"))
    assert r.status_code == 200 and r.json()["status"] == 1 and r.json()["event_id"] == ORDER
    assert attrs_of(client, ORDER)["price"] == "99.99"
    assert server.stats()["applications"] == {}


def test_forgotten_keys_make_a_resend_apply_twice(client: httpx.Client,
                                                  server: SandboxServer) -> None:
    """After /_sandbox/forget-keys a resend applies again and stats flag the key."""
    client.post(MUTATE, json=mutation_body(key="pruned"))
    assert client.post("/_sandbox/forget-keys").json() == {"status": 1, "forgotten": 2}
    r = client.post(MUTATE, json=mutation_body(key="pruned"))
    assert r.status_code == 200
    stats = server.stats()
    assert stats["applications"]["pruned"] == 2 and stats["double_applied"] == ["pruned"]


# ---------------------------------------------------------------------------------------------
# Propagation delay


def test_mutation_becomes_visible_to_lookups_after_the_propagation_delay(
        client: httpx.Client, server: SandboxServer) -> None:
    """Lookups see the old attributes until the delay passes; the event store has it at once."""
    server.store.propagation_delay = 0.3
    assert client.post(MUTATE, json=mutation_body()).status_code == 200
    before = client.post(LOOKUP, json=lookup_body()).json()["data"][0]
    assert before["event_attributes"]["price"] == "99.99"
    assert attrs_of(client, ORDER)["price"] == "149.99"
    time.sleep(0.35)
    after = client.post(LOOKUP, json=lookup_body()).json()["data"][0]
    assert after["event_attributes"]["price"] == "149.99"


def test_pending_mutations_become_visible_in_order(client: httpx.Client,
                                                   server: SandboxServer) -> None:
    """Two quick mutations of one event end with the later one visible."""
    server.store.propagation_delay = 0.1
    client.post(MUTATE, json=mutation_body(key="a", attrs={"price": "1.00"}))
    client.post(MUTATE, json=mutation_body(key="b", attrs={"price": "2.00"}))
    time.sleep(0.15)
    data = client.post(LOOKUP, json=lookup_body()).json()["data"]
    assert data[0]["event_attributes"]["price"] == "2.00"


# ---------------------------------------------------------------------------------------------
# Faults


def test_fault_429_carries_retry_after_and_applies_nothing(client: httpx.Client,
                                                           server: SandboxServer) -> None:
    """An injected 429 has a Retry-After header and commits nothing."""
    server.set_faults(rate_429=1.0, retry_after=3)
    r = client.post(MUTATE, json=mutation_body())
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert r.json()["status"] == 0
    assert attrs_of(client, ORDER)["price"] == "99.99"
    assert server.stats()["faults"] == {"429": 1}


@pytest.mark.parametrize("status", [500, 503])
def test_fault_5xx_applies_nothing(client: httpx.Client, server: SandboxServer,
                                   status: int) -> None:
    """Injected 500 and 503 answers commit nothing, so a retry applies once."""
    server.set_faults(**{f"rate_{status}": 1.0})
    r = client.post(MUTATE, json=mutation_body())
    assert r.status_code == status
    assert attrs_of(client, ORDER)["price"] == "99.99"
    server.set_faults(**{f"rate_{status}": 0.0})
    assert client.post(MUTATE, json=mutation_body()).status_code == 200
    assert server.stats()["applications"] == {"k-1": 1}


def test_fault_cut_drops_the_connection_and_applies_nothing(client: httpx.Client,
                                                            server: SandboxServer) -> None:
    """A cut closes the connection without an answer (not a 500) and commits nothing."""
    server.set_faults(rate_cut=1.0)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post(MUTATE, json=mutation_body())
    assert attrs_of(client, ORDER)["price"] == "99.99"
    assert server.stats()["applications"] == {}
    assert server.stats()["faults"] == {"cut": 1}


def test_fault_apply_then_cut_commits_then_drops_the_connection(client: httpx.Client,
                                                               server: SandboxServer) -> None:
    """apply_then_cut commits the mutation, the client sees a cut; a same-key retry replays."""
    server.set_faults(rate_apply_then_cut=1.0)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post(MUTATE, json=mutation_body())
    assert attrs_of(client, ORDER)["price"] == "149.99"
    server.set_faults(rate_apply_then_cut=0.0)
    retry = client.post(MUTATE, json=mutation_body())
    assert retry.status_code == 200 and retry.json()["status"] == 1
    stats = server.stats()
    assert stats["applications"] == {"k-1": 1} and stats["replays"] == 1
    assert stats["faults"] == {"apply_then_cut": 1}


def test_fault_apply_then_cut_on_lookup_drops_the_connection(client: httpx.Client,
                                                             server: SandboxServer) -> None:
    """Faults apply to lookups too: the answer is computed, then the connection is cut."""
    server.set_faults(rate_apply_then_cut=1.0)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post(LOOKUP, json=lookup_body())
    assert server.stats()["requests"]["lookup"] == 1


def test_latency_is_added_to_every_request(client: httpx.Client,
                                           server: SandboxServer) -> None:
    """latency_ms delays the answer by at least that long."""
    server.set_faults(latency_ms=150)
    start = time.perf_counter()
    assert client.post(LOOKUP, json=lookup_body()).status_code == 200
    assert time.perf_counter() - start >= 0.15
    assert server.stats()["faults"] == {"latency": 1}


def _fault_outcomes(client: httpx.Client, bodies: list[dict[str, Any]]) -> dict[str, str]:
    out = {}
    for body in bodies:
        try:
            out[body["attribute_value"]] = str(client.post(LOOKUP, json=body).status_code)
        except httpx.TransportError:
            out[body["attribute_value"]] = "cut"
    return out


def test_faults_are_reproducible_with_the_same_seed_in_any_order(
        client: httpx.Client, server: SandboxServer) -> None:
    """The same seed gives each request body the same fault, whatever the request order."""
    plan = {"seed": 7, "rate_429": 0.2, "rate_500": 0.2, "rate_503": 0.1, "rate_cut": 0.1}
    bodies = [lookup_body(f"ORD-{n}") for n in range(40)]
    server.set_faults(**plan)
    first = _fault_outcomes(client, bodies)
    server.reset()
    second = _fault_outcomes(client, list(reversed(bodies)))
    assert first == second
    assert {"200", "429", "500", "503", "cut"} <= set(first.values())
    server.reset()
    server.set_faults(seed=8)
    assert _fault_outcomes(client, bodies) != first


def test_a_retried_body_gets_a_fresh_fault_draw(client: httpx.Client,
                                                server: SandboxServer) -> None:
    """The n-th sighting of a body is part of the draw, so retries eventually get through."""
    server.set_faults(seed=1, rate_500=0.5)
    statuses = [client.post(LOOKUP, json=lookup_body()).status_code for _ in range(20)]
    assert set(statuses) == {200, 500}


def test_fault_plan_rejects_rates_summing_over_one(server: SandboxServer) -> None:
    """Rates that add up to more than 1 are refused."""
    with pytest.raises(ValueError, match="more than 1"):
        FaultPlan(rate_429=0.6, rate_500=0.6)


# ---------------------------------------------------------------------------------------------
# Control endpoints


def test_stats_report_requests_applications_and_faults(client: httpx.Client) -> None:
    """/_sandbox/stats counts requests per endpoint, applications per key and total mutations."""
    client.post(LOOKUP, json=lookup_body())
    client.post(MUTATE, json=mutation_body(key="s1"))
    client.post(MUTATE, json=mutation_body(key="s1"))
    client.post(MUTATE, json=mutation_body(eid(999), key="s2"))
    stats = client.get("/_sandbox/stats").json()
    assert stats["requests"] == {"lookup": 1, "mutation": 3}
    assert stats["applications"] == {"s1": 1}
    assert stats["double_applied"] == [] and stats["mutations"] == 1
    assert stats["faults"] == {}


def test_control_faults_endpoint_changes_the_plan(client: httpx.Client,
                                                  server: SandboxServer) -> None:
    """POST /_sandbox/faults replaces the given fields and sets the propagation delay."""
    r = client.post("/_sandbox/faults", json={"rate_503": 1.0, "propagation_delay": 0.5})
    assert r.status_code == 200
    assert r.json()["faults"]["rate_503"] == 1.0 and r.json()["propagation_delay"] == 0.5
    assert client.post(LOOKUP, json=lookup_body()).status_code == 503
    assert client.get("/_sandbox/faults").json()["faults"]["rate_503"] == 1.0
    bad = client.post("/_sandbox/faults", json={"rate_bogus": 1})
    assert bad.status_code == 400 and "rate_bogus" in bad.json()["error"]


def test_control_event_endpoint_shows_committed_state(client: httpx.Client) -> None:
    """GET /_sandbox/events/ID returns the event in lookup format, or 404."""
    r = client.get(f"/_sandbox/events/{DELETED}")
    assert r.json()["_is_deleted"] == 1 and r.json()["_timestamp"] == "2026-03-05 08:00:00"
    assert client.get(f"/_sandbox/events/{eid(999)}").status_code == 404


def test_reset_restores_events_keys_and_counters(client: httpx.Client) -> None:
    """POST /_sandbox/reset reloads the initial events and clears keys and counters."""
    client.post(MUTATE, json=mutation_body(key="before-reset"))
    assert client.post("/_sandbox/reset").json() == {"status": 1}
    assert attrs_of(client, ORDER)["price"] == "99.99"
    stats = client.get("/_sandbox/stats").json()
    assert stats["applications"] == {} and stats["requests"] == {"lookup": 0, "mutation": 0}
    again = client.post(MUTATE, json=mutation_body(TYPED, key="before-reset",
                                                   timestamp="2026-03-12T09:00:00Z"))
    assert again.status_code == 200


# ---------------------------------------------------------------------------------------------
# Loading, sample data, processes


def test_load_events_reads_csv_and_parquet_alike(tmp_path: Path) -> None:
    """CSV (JSON text attributes, either timestamp form) and Parquet load to the same events."""
    rows = [
        {"event_id": eid(1).upper(), "event_type": "order_completed",
         "_timestamp": "2026-03-10 14:30:00", "_is_deleted": "0",
         "event_attributes": '{"order_id": "ORD-1", "price": "1.00"}'},
        {"event_id": eid(2), "event_type": "order_completed",
         "_timestamp": "2026-03-11T15:00:00+01:00", "_is_deleted": "1",
         "event_attributes": '{"order_id": "ORD-2"}'},
    ]
    csv_path = tmp_path / "events.csv"
    csv_path.write_text("\ufeffevent_id,event_type,_timestamp,_is_deleted,event_attributes\n"
                        + "".join(",".join([r["event_id"], r["event_type"], r["_timestamp"],
                                            r["_is_deleted"],
                                            '"' + r["event_attributes"].replace('"', '""')
                                            + '"']) + "\n" for r in rows), encoding="utf-8")
    pq_path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pylist(
        [dict(r, _is_deleted=int(r["_is_deleted"])) for r in rows]), pq_path)
    for path in (csv_path, pq_path):
        events = load_events(path)
        assert [e.event_id for e in events] == [eid(1), eid(2)]
        assert events[1].timestamp == ts("2026-03-11 14:00:00")
        assert [e.is_deleted for e in events] == [False, True]
        assert events[0].attributes == {"order_id": "ORD-1", "price": "1.00"}


def test_load_events_names_the_bad_row(tmp_path: Path) -> None:
    """A row with a bad event_id raises ValueError naming its line."""
    path = tmp_path / "bad.csv"
    path.write_text("event_id,event_type,_timestamp,_is_deleted,event_attributes\n"
                    "nope,x,2026-03-01 00:00:00,0,{}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="row 2"):
        load_events(path)


def test_sample_data_has_the_documented_special_cases() -> None:
    """sample_data holds the deleted, duplicated, already-correct and 14-touch cases."""
    with SandboxServer() as sandbox, httpx.Client(base_url=sandbox.url, headers=AUTH) as c:
        def find(event_type: str, key: str, value: str, start: str, end: str) -> list[Any]:
            return c.post(LOOKUP, json=lookup_body(value, event_type=event_type, key=key,
                                                   start=start, end=end)).json()["data"]
        sep, octo = ("2026-09-01T00:00:00Z", "2026-09-30T23:59:59.999Z"), \
                    ("2026-10-01T00:00:00Z", "2026-10-31T23:59:59.999Z")
        assert [d["_is_deleted"] for d in find("order_completed", "order_id", "ORD-1013",
                                               *sep)] == [1]
        assert len(find("order_completed", "order_id", "ORD-1042", *octo)) == 2
        assert find("order_completed", "order_id", "ORD-1007",
                    *sep)[0]["event_attributes"]["final_price"] == "149.99"
        assert len(find("campaign_touch", "campaign", "black-friday", *octo)) == 10
        assert len(find("campaign_touch", "campaign", "black-friday",
                        "2026-10-01T00:00:00Z", "2026-10-24T00:00:00Z")) < 10
        assert find("order_completed", "order_id", "ORD-1030",
                    *sep)[0]["_timestamp"] == "2026-09-30 23:59:59"
        legacy = find("order_completed", "order_id", "ORD-1005", *sep)[0]["event_id"]
        other = find("order_completed", "order_id", "ORD-1001", *sep)[0]
        r = c.post(MUTATE, json=mutation_body(other["event_id"], key="legacy-fix-001",
                                              timestamp="2026-09-15T00:00:00Z"))
        assert r.status_code == 409
        assert legacy == "818d252e-1400-4cf1-8c82-3717de624e00"
    events = load_events(SAMPLE / "events.csv")
    assert len(events) >= 200
    assert sum(e.attributes.get("campaign") == "black-friday" for e in events) == 14
    assert sum(e.is_deleted for e in events) == 1


def test_sample_data_is_regenerated_byte_for_byte(tmp_path: Path) -> None:
    """make_events.py is deterministic: it reproduces the committed files exactly."""
    subprocess.run([sys.executable, str(SAMPLE / "make_events.py"), str(tmp_path)],
                   check=True, capture_output=True)
    for name in ("events.csv", "used_keys.csv"):
        assert (tmp_path / name).read_bytes() == (SAMPLE / name).read_bytes()


def test_subprocess_prints_its_url_and_stops_on_sigterm() -> None:
    """`python -m pipeline.sandbox --port 0` announces its URL and exits 0 on SIGTERM."""
    proc, url = start_subprocess(["--seed", "3"])
    try:
        with httpx.Client(base_url=url, headers=AUTH) as c:
            assert c.post(LOOKUP, json=lookup_body("ORD-1001", start="2026-09-01T00:00:00Z",
                                                   end="2026-09-30T23:59:59Z")).status_code == 200
            assert c.get("/_sandbox/faults").json()["faults"]["seed"] == 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_command_refuses_a_non_loopback_host() -> None:
    """`sandbox --host 0.0.0.0` is a usage error: the sandbox only serves loopback."""
    result = CliRunner().invoke(sandbox_command, ["--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 2
    assert "loopback" in result.output


def test_command_help_has_an_example() -> None:
    """`sandbox --help` shows an example invocation."""
    result = CliRunner().invoke(sandbox_command, ["--help"])
    assert result.exit_code == 0 and "corrections sandbox --port" in result.output
