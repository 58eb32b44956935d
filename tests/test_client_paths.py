"""The Usermaven client's two ways onto the wire answer alike.

On the tool's own aiohttp pool, requests skip httpx's models (`transport.Route` → `Answer`);
with any other transport (tests, embedders) they go through `httpx.AsyncClient`. Every
guarantee must hold on both: the same request bytes, the whole-request deadline, the answer
cap, refused redirects, redaction and the same error classes and messages.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hostile import TOKEN, Exchange, hostile_server, mutation_ok

from pipeline.model import Window
from pipeline.targets.usermaven.client import UsermavenClient
from pipeline.transport import MAX_ANSWER_BYTES, AiohttpTransport
from pipeline.wire import make_http_client

EVENT = "0f8fad5b-d9cb-469f-a165-70867728950e"
WINDOW = Window(datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 9, 30, 23, 59, 59, tzinfo=UTC))
LOOKUP = {"data": [{"event_id": EVENT, "event_type": "order_completed",
                    "event_attributes": {"order_id": "ORD-1", "final_price": "9.99"},
                    "_timestamp": "2026-09-10 10:00:00", "_is_deleted": 0}]}


async def _call(url: str, direct: bool, what: str, timeout: float) -> tuple[str, Any]:
    """One lookup or mutation; (outcome kind, value or exception details)."""
    wire = AiohttpTransport(limit=4)
    async with make_http_client(url, concurrency=2, timeout=timeout, transport=wire) as http:
        client = UsermavenClient(http, TOKEN, transport=wire if direct else None)
        try:
            if what == "lookup":
                found, count = await client.lookup("order_completed", "order_id", "ORD-1",
                                                   WINDOW)
                return "ok", ([(e.event_id, e.attributes, e.timestamp) for e in found], count)
            result = await client.mutate(EVENT, WINDOW.start, {"final_price": "1.00"},
                                         "merge", "corr-v1-test")
            return "ok", (result.mutation_id, result.http_status)
        except Exception as exc:
            return "error", (type(exc).__name__, str(exc), getattr(exc, "http_status", None),
                             getattr(exc, "retry_after", None))


def both(respond: Callable[[Exchange], None], what: str = "lookup",
         timeout: float = 10.0) -> tuple[tuple[str, Any], tuple[str, Any], list[Exchange]]:
    """The same call through the direct pool path and the httpx path, on one server."""
    with hostile_server(respond) as srv:
        direct = asyncio.run(asyncio.wait_for(_call(srv.url, True, what, timeout), 30))
        via_httpx = asyncio.run(asyncio.wait_for(_call(srv.url, False, what, timeout), 30))
        return direct, via_httpx, list(srv.seen)


def echo_token(ex: Exchange) -> None:
    auth = ex.headers.get("authorization", "")
    ex.reply(422, {"error": f"bad request from {auth}"}, headers={"X-Echo": auth})


def redirect(ex: Exchange) -> None:
    ex.reply(302, b"", headers={"Location": "https://elsewhere.example/v1/x?token=abc"})


def throttled(ex: Exchange) -> None:
    ex.reply(429, {"error": "slow down"}, headers={"Retry-After": "7"})


def not_json(ex: Exchange) -> None:
    ex.reply(200, "<html>proxy error</html>", headers={"Content-Type": "text/html"})


def too_large(ex: Exchange) -> None:
    ex.handler.send_response(200)
    ex.handler.send_header("Content-Length", str(MAX_ANSWER_BYTES + 1))
    ex.handler.end_headers()
    ex.write(b"{" * 1024)


def gzipped(ex: Exchange) -> None:
    ex.reply(200, gzip.compress(json.dumps(LOOKUP).encode()),
             headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})


def dripped(ex: Exchange) -> None:
    ex.handler.send_response(200)
    ex.handler.send_header("Content-Length", "1000")
    ex.handler.end_headers()
    ex.drip(b" " * 1000, every=0.2)


@pytest.mark.parametrize("respond, expected", [
    (echo_token, "RejectedError"),
    (redirect, "FatalApiError"),
    (throttled, "RateLimited"),
    (not_json, "NotJson"),
    (too_large, "TransientError"),
])
def test_a_refused_or_broken_answer_raises_the_same_error_on_both_paths(respond, expected):
    """Each broken answer gives the same error class, message, status and Retry-After."""
    direct, via_httpx, _ = both(respond)
    assert direct == via_httpx
    kind, (name, message, _status, _retry_after) = direct
    assert kind == "error" and name == expected
    assert TOKEN not in message and TOKEN.split(".")[1] not in message


def test_an_echoed_token_is_redacted_on_the_direct_path():
    """A 422 quoting the Authorization header reaches the caller as `[redacted]`."""
    direct, _, _ = both(echo_token)
    _, (_, message, status, _) = direct
    assert status == 422 and "[redacted]" in message


def test_a_redirect_names_the_host_only_and_is_not_followed():
    """A 302 is refused without following it; the message names no path or query."""
    direct, _, seen = both(redirect)
    _, (_, message, status, _) = direct
    assert status == 302 and "elsewhere.example" in message and "token=abc" not in message
    assert len(seen) == 2  # one request per path, none to the redirect's target


def test_retry_after_is_read_on_the_direct_path():
    """A 429's `Retry-After: 7` comes back as 7 seconds."""
    direct, _, _ = both(throttled)
    assert direct[1][2:] == (429, 7.0)


def test_a_gzip_answer_sent_anyway_reads_the_same_on_both_paths():
    """A lookup compressed although identity was asked for is inflated and parsed alike."""
    direct, via_httpx, _ = both(gzipped)
    assert direct == via_httpx
    assert direct[0] == "ok" and direct[1][0][0][0] == EVENT


def test_a_dripped_answer_ends_at_the_deadline_on_both_paths():
    """A body dripped slower than the timeout allows ends as the same timeout, not a hang."""
    direct, via_httpx, _ = both(dripped, timeout=1.0)
    assert direct == via_httpx
    assert direct[0] == "error" and direct[1][0] == "TransportFailure"
    assert "no complete answer within 1 s" in direct[1][1]


def test_both_paths_send_the_same_request():
    """Method, path, body and every header but the connection's own are identical."""
    direct, via_httpx, seen = both(mutation_ok, what="mutation")
    assert direct == via_httpx and direct[0] == "ok"
    a, b = seen
    assert (a.method, a.path, a.body) == (b.method, b.path, b.body)
    skip = {"host", "connection", "content-length"}
    assert {k: v for k, v in a.headers.items() if k not in skip} == \
        {k: v for k, v in b.headers.items() if k not in skip}
    assert a.headers["accept-encoding"] == "identity"
    assert a.headers["authorization"] == f"Bearer {TOKEN}"
