"""Read applied events back and confirm the new values are visible.

Mutations propagate asynchronously, so verification looks again every second or so until
`wait` seconds have passed. An event is found by its exact `_timestamp` (a one-second window,
when a lookup told us the time; otherwise its calendar month, split while pages are full) and
by any attribute of the state it should have — the row's lookup attribute if the correction
kept it, else a value the correction wrote — so a `replace` that dropped the lookup attribute
and an event behind ten newer ones with the same value are found too. An event still showing
its old values has not propagated yet: `pending`, not `mismatch`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from pipeline.checkpoint import Checkpoint, workspace_id
from pipeline.checkpoint_jobs import open_existing
from pipeline.errors import ApiError, AuthError, FatalApiError, UsageError
from pipeline.jobs import new_run_id
from pipeline.jsontypes import holds, same_json
from pipeline.lock import RunLock
from pipeline.model import FoundEvent, Status, Window
from pipeline.retry import RetryPolicy, RetryStats, call_with_retry
from pipeline.targets.usermaven.client import UsermavenClient
from pipeline.targets.usermaven.resolve import LookupCache, LookupIncomplete, Resolver
from pipeline.throttle import Throttle
from pipeline.timeutil import month_window, parse_timestamp
from pipeline.transport import AiohttpTransport
from pipeline.wire import make_http_client


@dataclass
class VerifyOutcome:
    verified: int = 0
    mismatch: int = 0
    pending: int = 0
    unverifiable: int = 0
    requests: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if not (self.mismatch or self.pending) else 1


@dataclass
class _Check:
    row_key: str
    event_id: str
    event_type: str
    searches: list[tuple[str, str]]  # (attribute, value as text) to look the event up by
    window: Window
    expected: Mapping[str, Any]
    before: Mapping[str, Any] | None
    merge_mode: str
    seen: Mapping[str, Any] | None = None

    @property
    def key(self) -> str:
        return " or ".join(k for k, _ in self.searches)

    def not_yet_visible(self) -> bool:
        """The event still shows the values it had before the correction (for every key the
        correction changes): the mutation has not propagated yet."""
        if self.seen is None or self.before is None:
            return False
        return all(same_json(self.seen.get(k), self.before.get(k)) for k in self.expected
                   if not same_json(self.before.get(k), self.expected[k]))


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return None


def _plan_check(m: Mapping[str, Any]) -> _Check | str:
    """How to look one applied event up again, or why it cannot be."""
    expected = json.loads(m["attributes_after"])
    before = json.loads(m["attributes_before"]) if m.get("attributes_before") else None
    if not m["event_type"]:
        return ("no event_type in the sheet: the lookup endpoint needs one (add the column "
                "or --event-type to verify event_id rows)")
    at = parse_timestamp(m["timestamp"])
    if before is not None and not m.get("sheet_event_id"):
        # the time came from the lookup's `_timestamp`: the event's own second
        start = at.replace(microsecond=0)
        window = Window(start, start + timedelta(milliseconds=999))
    else:
        window = Window(*month_window(at))
    searches: list[tuple[str, str]] = []
    lookup_key = m.get("lookup_key")
    if (lookup_key and m.get("lookup_value") is not None
            and (lookup_key not in expected if m["merge_mode"] == "merge" else False)):
        searches.append((lookup_key, m["lookup_value"]))
    for k, v in expected.items():
        if (text := _text(v)) is not None and k:
            searches.append((k, text))
    if not searches:
        return "no scalar value to look the event up by"
    return _Check(m["row_key"], m["event_id"], m["event_type"], searches[:3], window,
                  expected, before, m["merge_mode"])


def verify_checkpoint(cp: Checkpoint, api_url: str, token: str, *, wait: float = 30.0,
                      concurrency: int = 4, timeout: float = 30.0, run_id: str = "",
                      transport: httpx.AsyncBaseTransport | None = None) -> VerifyOutcome:
    """Check every applied mutation of the latest sheet; record verified/mismatch."""
    out = VerifyOutcome()
    checks: list[_Check] = []
    for m in cp.applied_mutations():
        plan = _plan_check(m)
        if isinstance(plan, str):
            out.unverifiable += 1
            cp.record_note(m["row_key"], m["event_id"], f"not verified: {plan}")
            out.details.append(f"{m['event_id']}: not verified: {plan}")
            continue
        checks.append(plan)

    async def go() -> None:
        wire = transport or AiohttpTransport(limit=concurrency + 2)
        async with make_http_client(api_url, concurrency=concurrency, timeout=timeout,
                                    transport=wire) as http:
            await _rounds(UsermavenClient(http, token, transport=wire))

    async def _rounds(client: UsermavenClient) -> None:
        throttle = Throttle(concurrency)
        policy, stats = RetryPolicy(max_attempts=5, backoff_base=0.2, backoff_max=5), RetryStats()
        deadline = time.monotonic() + wait
        todo = list(checks)
        while True:
            results = await asyncio.gather(*(_look(client, throttle, policy, stats, c)
                                             for c in todo))
            todo = [c for c, ok in zip(todo, results, strict=True) if not ok]
            if not todo or time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        out.requests = client.requests
        for c in checks:
            if c not in todo:
                out.verified += 1
                cp.record_outcome_status(c.row_key, c.event_id, Status.VERIFIED, run_id,
                                         note="verified: the new values are visible")
            elif c.seen is None:
                out.pending += 1
                cp.record_note(c.row_key, c.event_id,
                               f"verification pending: event not found by {c.key} after "
                               f"{wait:.0f} s")
                out.details.append(f"{c.event_id}: not found by {c.key} (not visible yet)")
            elif c.not_yet_visible():
                out.pending += 1
                cp.record_note(c.row_key, c.event_id,
                               f"verification pending: the event still shows its values from "
                               f"before the correction after {wait:.0f} s (not propagated yet)")
                out.details.append(f"{c.event_id}: still shows the old values (not "
                                   "propagated yet)")
            else:
                out.mismatch += 1
                diff = {k: c.seen.get(k) for k in c.expected
                        if not same_json(c.seen.get(k), c.expected[k])}
                cp.record_outcome_status(c.row_key, c.event_id, Status.MISMATCH, run_id,
                                         note=f"mismatch after {wait:.0f} s: event holds "
                                              f"{json.dumps(diff, ensure_ascii=False)}")
                out.details.append(f"{c.event_id}: holds {diff}")

    asyncio.run(go())
    cp.note_change(run_id)  # reports written before no longer show the verdicts
    return out


async def _look(client: UsermavenClient, throttle: Throttle, policy: RetryPolicy,
                stats: RetryStats, c: _Check) -> bool:
    """One round for one event: True once it shows the expected values."""
    async def lookup(event_type: str, key: str, value: str,
                     window: Window) -> tuple[list[FoundEvent], int]:
        result, _ = await call_with_retry(
            lambda: client.lookup(event_type, key, value, window),
            throttle=throttle, policy=policy, stats=stats)
        return result

    finder = Resolver(LookupCache(lookup))  # fresh answers each round
    for key, value in c.searches:
        try:
            events = await finder.find_all(c.event_type, key, value, c.window)
        except (AuthError, FatalApiError):  # no later lookup can succeed either
            raise
        except (ApiError, LookupIncomplete):
            continue
        for e in events:
            if e.event_id == c.event_id:
                c.seen = e.attributes
                if holds(e.attributes, c.expected, c.merge_mode):
                    return True
    return False


def verify(checkpoint_path: Path, api_url: str, token: str, *, wait: float,
           concurrency: int = 4, timeout: float = 30.0,
           transport: httpx.AsyncBaseTransport | None = None) -> VerifyOutcome:
    """Lock the checkpoint, check it belongs to this API, verify, record."""
    with RunLock(checkpoint_path):
        cp = open_existing(checkpoint_path, upgrade=True)
        try:
            if cp.meta("api_url") == "sandbox":
                raise UsageError(
                    "this checkpoint was made with --sandbox, whose events live only for one "
                    "run; verify runs against a sandbox started with `corrections sandbox`")
            cp.bind_target(api_url, workspace_id(token))
            return verify_checkpoint(cp, api_url, token, wait=wait, concurrency=concurrency,
                                     timeout=timeout, run_id=new_run_id(), transport=transport)
        finally:
            cp.close()
