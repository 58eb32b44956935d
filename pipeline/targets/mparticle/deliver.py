"""The mParticle part of a run: plan deliveries per row, commit them, send, record answers.

It runs after the Usermaven part (when both are targeted), so each corrected event's time and
idempotency key come from the Usermaven lookup already in the checkpoint. Planning happens
sheet chunk by sheet chunk (`planning.Planning`) and is committed before any request leaves;
sending then streams the committed batches (new ones and any left pending or failed by earlier
runs) in requests of up to 100 batches, paced by the same throttle and retry policy as
Usermaven's mutations.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import partial
from urllib.parse import urlsplit

from pipeline.checkpoint import Checkpoint
from pipeline.engine import HELD_BACK, Engine
from pipeline.errors import UnexpectedError
from pipeline.faults import checkpoint_write_error, describe
from pipeline.model import Correction, RowProblem, Status
from pipeline.retry import RetryPolicy
from pipeline.run_types import Delivered, RunOptions
from pipeline.signals import on_loop
from pipeline.targets.mparticle.batching import Outgoing, pack_requests, request_body, route
from pipeline.targets.mparticle.client import MParticleClient, MParticleTarget
from pipeline.targets.mparticle.ledger import DONE, Ledger, Pending
from pipeline.targets.mparticle.mapping import MParticleOptions
from pipeline.targets.mparticle.planning import Planning
from pipeline.timeutil import parse_timestamp, utcnow
from pipeline.wire import make_http_client

log = logging.getLogger("corrections")

#: How long mParticle is sure to drop a repeated source_request_id (it says 30–60 days).
DEDUPE_WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class MParticleSetup:
    """Everything the mParticle part of a run needs: where, and how to shape corrections."""

    target: MParticleTarget
    options: MParticleOptions = field(default_factory=MParticleOptions)


@dataclass
class MParticleResult(Delivered):
    """The mParticle part: batches planned and sent, by endpoint and outcome."""

    batches_planned: int = 0
    batches_sent: int = 0
    by_endpoint: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)


class Delivery(Planning, Engine):
    """One run's mParticle deliveries over one sheet: planned (`Planning`), then sent by the
    engine, a request per group of batches, in order per user."""

    def __init__(self, cp: Checkpoint, setup: MParticleSetup, options: RunOptions, *,
                 run_id: str, generation: int, usermaven: bool, register: bool) -> None:
        Engine.__init__(
            self, concurrency=options.concurrency, rate=options.rate,
            max_wait=options.max_wait, shutdown_grace=options.shutdown_grace,
            policy=RetryPolicy(options.max_attempts, options.backoff_base,
                               options.backoff_max),
            host=urlsplit(setup.target.base_url).hostname or "mParticle")
        self.cp = cp
        self.ledger = Ledger(cp)
        self.setup = setup
        self.mp = setup.options
        self.opts = options
        self.run_id = run_id
        self.generation = generation
        self.usermaven = usermaven
        self.register = register
        self.result = MParticleResult()
        self._met: set[str] = set()
        self._last_change: dict[str, str] = {}  # event (or lookup) -> its latest change
        self._user_of: dict[str, str] = {}  # batch id -> user key
        self._attempts: Counter[str] = Counter()

    # -- sending ------------------------------------------------------------------------

    async def send(self) -> None:
        """Send every committed batch still pending or failed for this sheet."""
        todo = self.ledger.resendable(self.generation)
        if not todo:
            return
        todo = self._route_now(todo)
        self._user_of = {p.batch_id: p.user_key for p in todo}
        self._warn_if_stale()
        target = self.setup.target
        http = make_http_client(target.base_url, concurrency=self.opts.concurrency,
                                timeout=self.opts.timeout, transport=target.transport)
        window = asyncio.Semaphore(max(4, self.opts.concurrency * 4))
        async with http:
            self.client = MParticleClient(http, target)
            try:
                for group in pack_requests(todo):
                    if not await self._acquire(window):
                        break
                    self.start({b.user_key for b in group},
                               partial(self._request, group, window))
            finally:
                await self._drain()
                self.result.requests = self.client.requests
                self.result.retries = self.stats.retries
                self.result.throttled = self.stats.throttled
                self.result.stop_reason = self.stop_reason
                self.result.fatal = str(self.fatal) if self.fatal is not None else None
                self.result.signal_number = self.signal_number

    def _route_now(self, todo: list[Pending]) -> list[Pending]:
        """Each batch's endpoint from its events' age now, not when it was planned: a batch
        planned at 29 days and sent two days later belongs on /historical."""
        if self.mp.mode != "event":
            return todo
        now = utcnow()
        out = []
        for p in todo:
            endpoint = route(parse_timestamp(p.newest), now) if p.newest else p.endpoint
            if endpoint != p.endpoint:
                self.ledger.reroute(p.batch_id, endpoint)
                p = replace(p, endpoint=endpoint)
            out.append(p)
        return out

    def _warn_if_stale(self) -> None:
        """mParticle drops a repeated source_request_id for 30–60 days only: say so when a
        batch that may already have arrived is older than that window's safe end."""
        oldest = self.ledger.oldest_unanswered()
        if oldest and utcnow() - parse_timestamp(oldest) > DEDUPE_WINDOW:
            log.warning("mparticle: resending batches first committed on %s; mParticle drops "
                        "duplicate source_request_ids for 30–60 days only, so any of them that "
                        "reached it before may be counted twice", oldest[:10],
                        extra={"event": "mparticle_stale_resend", "oldest": oldest})

    async def _request(self, group: list[Pending], window: asyncio.Semaphore,
                       held: frozenset[str]) -> set[str]:
        """One request for `group`, less the batches of users held back; returns the users
        whose batch here was not answered for good."""
        try:
            # a user's later batch waits for the earlier one to be *accepted*: sent after a
            # failure, it would be overtaken by the earlier one's resend on the next run
            if held:
                self._record([p.batch_id for p in group if p.user_key in held], "pending",
                             None, HELD_BACK.format(chain="this user's corrections"))
            group = [p for p in group if p.user_key not in held]
            if not group or self.stopping:
                return {p.user_key for p in group}
            unsettled = await self._send(self.ledger.bodies(group))
            return {self._user_of.get(i, "") for i in unsettled}
        except Exception as exc:  # a checkpoint that refuses writes, or a fault nobody
            # foresaw: the run stops cleanly (batches stay pending), never a lost task
            self._fatal(checkpoint_write_error(exc)
                        or UnexpectedError(f"mparticle: stopped on {describe(exc)}"))
            return {p.user_key for p in group}
        finally:
            window.release()

    async def _send(self, batches: list[Outgoing]) -> set[str]:
        """Send, record each batch's answer; returns the batch ids not answered for good."""
        path = batches[0].endpoint
        ids = [b.batch_id for b in batches]
        body = request_body(batches)
        answer = await self.attempt(lambda: self.client.post(path, body))
        self._add_attempts(ids, answer.tries)
        if answer.status is Status.PENDING:
            return set(ids)  # the run stopped: they stay pending
        if answer.status is not Status.APPLIED:
            exc = answer.error
            assert exc is not None
            if answer.status is Status.FAILED:
                self._record(ids, "failed", exc.http_status, str(exc))
                return set(ids)
            if len(batches) > 1 and exc.http_status == 400:
                # one bad batch spoils the request: halve until it stands alone
                log.info("mparticle: 400 for %d batches; splitting to find the one at fault",
                         len(batches))
                return await self._halves(batches)
            self._record(ids, "rejected", exc.http_status, str(exc))
            log.warning("mparticle: %s refused %d batch(es): %s", path, len(ids), exc,
                        extra={"event": "mparticle_rejected", "endpoint": path,
                               "http_status": exc.http_status, "error": str(exc)})
            return set()
        accepted = answer.value
        assert accepted is not None
        if accepted.errors:
            # 202 although some batches failed (documented): a batch the errors name by its
            # source_request_id is rejected. Errors naming no batch prove nothing about any
            # one of them: the request is resent in halves (the same bytes per batch, which
            # mParticle drops if it kept them) until each error has its batch.
            log.warning("mparticle: %s answered %s with errors: %s", path,
                        accepted.http_status, "; ".join(accepted.errors))
            named = {i: [e for e in accepted.errors if i in e] for i in ids}
            unnamed = [e for e in accepted.errors if not any(i in e for i in ids)]
            if unnamed and len(batches) > 1:
                return await self._halves(batches)
            if unnamed:
                named[ids[0]] = list(accepted.errors)
            for i in ids:
                if named[i]:
                    self._record([i], "rejected", accepted.http_status, "; ".join(named[i]))
            ids = [i for i in ids if not named[i]]
        self._record(ids, "accepted", accepted.http_status, None)
        self.result.batches_sent += len(ids)
        by = self.result.by_endpoint
        by[path] = by.get(path, 0) + len(ids)
        log.debug("mparticle: %s accepted %d batch(es)", path, len(ids),
                  extra={"event": "mparticle_accepted", "endpoint": path, "batches": len(ids)})
        return set()

    async def _halves(self, batches: list[Outgoing]) -> set[str]:
        half = len(batches) // 2
        return await self._send(batches[:half]) | await self._send(batches[half:])

    def _add_attempts(self, ids: list[str], tries: int) -> None:
        for i in ids:
            self._attempts[i] += tries

    def _record(self, ids: list[str], status: str, http_status: int | None,
                error: str | None) -> None:
        for batch_id in ids:
            self.ledger.record([batch_id], status, run_id=self.run_id,
                               attempts=self._attempts.pop(batch_id, 0),
                               http_status=http_status, error=error)
        self.result.outcomes[status] = self.result.outcomes.get(status, 0) + len(ids)


def deliver(cp: Checkpoint, setup: MParticleSetup, options: RunOptions,
            batches: Callable[[], Iterable[list[Correction | RowProblem]]], *, run_id: str,
            generation: int, usermaven: bool, install_signals: bool = True,
            early: list[int] | None = None) -> MParticleResult:
    """Plan, commit and send this run's mParticle deliveries; see the module docstring.

    With `usermaven` false the sheet's rows are registered here (Usermaven's runner does it
    otherwise). In a plan run nothing is sent.
    """
    started = time.monotonic()
    d = Delivery(cp, setup, options, run_id=run_id, generation=generation,
                 usermaven=usermaven, register=not usermaven)
    d.plan(batches())
    if options.plan_only:
        d.result.elapsed = time.monotonic() - started
        return d.result

    async def go() -> None:
        with on_loop(asyncio.get_running_loop(), d.request_stop, install_signals):
            if early:
                d.request_stop(early[0])
            await d.send()

    asyncio.run(go())
    d.result.elapsed = time.monotonic() - started
    return d.result


def rows_left(counts: dict[str, int]) -> int:
    return sum(n for s, n in counts.items() if s not in DONE and s != "planned")

