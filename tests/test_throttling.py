"""Politeness under pushback: Retry-After for everyone, backoff, adaptive concurrency, rate."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
from conftest import read_report, write_csv
from tenacity import RetryCallState

from pipeline.errors import RateLimited, RetryAfterTooLong, TransientError
from pipeline.jobs import SheetJob, Target, apply_sheet
from pipeline.model import SheetDefaults
from pipeline.retry import RetryPolicy, RetryStats, _Wait, call_with_retry
from pipeline.run_types import RunOptions
from pipeline.throttle import Throttle
from pipeline.wire import retry_after_seconds

EVENT_IDS = [f"00000000-0000-4000-8000-{i:012d}" for i in range(1, 13)]


def event_id_sheet(tmp_path: Path, n: int = 12) -> Path:
    return write_csv(tmp_path / "s.csv", [
        {"event_id": eid, "timestamp": "2026-09-10T00:00:00Z", "set.final_price": str(i)}
        for i, eid in enumerate(EVENT_IDS[:n])])


def run_mock(tmp_path: Path, handler, rows: int = 12, **options) -> list[dict[str, str]]:
    target = Target("http://127.0.0.1:9", "k.s", "mock")
    opts = RunOptions(**{"backoff_base": 0.001, "backoff_max": 0.01, **options})
    out = apply_sheet(SheetJob(event_id_sheet(tmp_path, rows), SheetDefaults()), target, opts,
                      checkpoint=tmp_path / "cp.sqlite", report=tmp_path / "r.csv",
                      transport=httpx.MockTransport(handler), install_signals=False)
    return read_report(out.report) + [{"exit_code": str(out.exit_code)}]


def ok(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    return httpx.Response(200, json={"status": 1, "mutation_id": f"m-{body['idempotency_key']}",
                                     "event_id": body["event_id"]})


def test_retry_after_from_one_answer_pauses_every_worker(tmp_path):
    """After a 429 with Retry-After: 1, no worker sends anything for that second."""
    sent: list[float] = []
    throttled_at: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        now = time.monotonic()
        sent.append(now)
        if not throttled_at:
            throttled_at.append(now)
            return httpx.Response(429, headers={"Retry-After": "1"}, json={"error": "slow"})
        return ok(request)

    lines = run_mock(tmp_path, handler, concurrency=4)
    assert {r["status"] for r in lines[:-1]} == {"applied"}
    t0 = throttled_at[0]
    # requests already in flight when the 429 came back may land just after it; new ones wait
    started_in_pause = [t for t in sent if t0 + 0.05 < t < t0 + 1.0]
    assert started_in_pause == []


def test_retry_after_longer_than_max_wait_ends_the_run_cleanly_with_rows_pending(tmp_path):
    """A Retry-After of an hour (> --max-wait) stops the run: exit 1, rows pending, no sleep."""
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "3600"})

    started = time.monotonic()
    lines = run_mock(tmp_path, handler, max_wait=60)
    assert time.monotonic() - started < 20
    assert lines[-1]["exit_code"] == "1"
    assert {r["status"] for r in lines[:-1]} == {"pending"}


def test_the_same_idempotency_key_is_sent_on_every_retry(tmp_path):
    """500, timeout and cut connections are retried with the very same key."""
    seen: dict[str, list[str]] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        keys = seen.setdefault(body["event_id"], [])
        keys.append(body["idempotency_key"])
        if len(keys) == 1:
            return httpx.Response(500)
        if len(keys) == 2:
            raise httpx.ReadTimeout("slow", request=request)
        if len(keys) == 3:
            raise httpx.RemoteProtocolError("cut", request=request)
        return ok(request)

    # four rows: every row failing in step, twelve would be a streak of transport failures
    # long enough to trip the outage breaker (tests/test_outages.py)
    lines = run_mock(tmp_path, handler, rows=4, max_attempts=5)
    assert {r["status"] for r in lines[:-1]} == {"applied"}
    assert all(len(k) == 4 and len(set(k)) == 1 for k in seen.values())
    assert {r["attempts"] for r in lines[:-1]} == {"4"}


@pytest.mark.parametrize(("status", "expected"), [
    (404, "not_found"), (409, "conflict"), (422, "rejected"), (400, "rejected")])
def test_permanent_answers_are_not_retried(tmp_path, status, expected):
    """404, 409, 422 (and other 4xx) end the row at once with the server's message."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(status, json={"status": 0, "error": f"said {status}"})

    lines = run_mock(tmp_path, handler)
    assert {r["status"] for r in lines[:-1]} == {expected}
    assert all(f"said {status}" in r["error"] for r in lines[:-1])
    assert len(calls) == 12


def test_a_401_stops_the_run_with_exit_3_and_no_row_failed(tmp_path):
    """401 is fatal: the run stops (exit 3) and rows stay pending."""
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "bad token"})

    lines = run_mock(tmp_path, handler, concurrency=2)
    assert lines[-1]["exit_code"] == "3"
    assert {r["status"] for r in lines[:-1]} == {"pending"}


def test_concurrency_halves_on_pushback_and_regrows_slowly():
    """AIMD: each 429/503 halves the limit; successes add about one slot per window."""
    t = Throttle(16)
    t.on_pushback()
    assert t.limit == 8
    t.on_pushback()
    assert t.limit == 4
    for _ in range(4):
        t.on_success()
    assert 4 < t.limit < 6
    for _ in range(1000):
        t.on_success()
    assert t.limit == 16


def test_in_flight_requests_never_exceed_the_limit():
    """However many callers, at most `concurrency` are inside a slot at once."""
    t = Throttle(3)
    peak = 0

    async def one() -> None:
        nonlocal peak
        async with t.slot():
            peak = max(peak, t.in_flight)
            await asyncio.sleep(0.01)

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(30)))

    asyncio.run(main())
    assert peak == 3


def test_rate_ceiling_spaces_requests():
    """--rate 20 lets about 20 requests start per second, not all at once."""
    t = Throttle(50, rate=20)
    starts: list[float] = []

    async def one() -> None:
        async with t.slot():
            starts.append(time.monotonic())

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(40)))

    asyncio.run(main())
    assert starts[-1] - starts[0] >= 0.9


def test_pause_longer_than_max_wait_raises():
    """A Retry-After beyond --max-wait raises instead of sleeping."""
    with pytest.raises(RetryAfterTooLong):
        Throttle(4, max_wait=10).pause(11)


def test_jitter_never_shortens_a_retry_after():
    """The wait after a 429 is at least its Retry-After, whatever the jitter draws."""
    wait = _Wait(RetryPolicy(backoff_base=0.5, backoff_max=30))

    def state(exc: Exception, attempt: int) -> RetryCallState:
        s = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        s.attempt_number = attempt
        fut = __import__("concurrent.futures").futures.Future()
        fut.set_exception(exc)
        s.outcome = fut
        return s

    for attempt in range(1, 8):
        assert wait(state(RateLimited("x", retry_after=2.0), attempt)) >= 2.0
        assert 0 <= wait(state(TransientError("x"), attempt)) <= min(30, 0.5 * 2 ** attempt)


def test_retry_after_is_read_as_seconds_or_an_http_date():
    """Both forms of Retry-After become seconds to wait."""
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("7") == 7
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True),
                               now=now) == 30
    assert retry_after_seconds("garbage") is None
    assert retry_after_seconds(None) is None


def test_attempts_are_counted_and_capped_by_max_attempts():
    """call_with_retry gives up after max_attempts and says how many it made."""
    calls = 0

    async def boom() -> None:
        nonlocal calls
        calls += 1
        raise TransientError("down", http_status=503)

    async def main() -> None:
        await call_with_retry(boom, throttle=Throttle(2), stats=RetryStats(),
                              policy=RetryPolicy(max_attempts=3, backoff_base=0.001,
                                                 backoff_max=0.001))

    with pytest.raises(TransientError) as info:
        asyncio.run(main())
    assert calls == 3 and info.value.attempts == 3  # type: ignore[attr-defined]
