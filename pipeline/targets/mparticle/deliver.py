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
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from urllib.parse import urlsplit

from pipeline.checkpoint import Checkpoint
from pipeline.client import make_http_client
from pipeline.errors import (
    AuthError,
    FatalApiError,
    RejectedError,
    RetryAfterTooLong,
    TransientError,
    TransportFailure,
    UnexpectedError,
)
from pipeline.faults import checkpoint_write_error, describe
from pipeline.model import Correction, RowProblem
from pipeline.retry import RetryPolicy, RetryStats, call_with_retry
from pipeline.runner import RunOptions
from pipeline.signals import on_loop
from pipeline.targets.mparticle.batching import (
    Outgoing,
    pack_requests,
    request_body,
    route,
)
from pipeline.targets.mparticle.client import Accepted, MParticleClient, MParticleTarget
from pipeline.targets.mparticle.ledger import DONE, Ledger, Pending
from pipeline.targets.mparticle.mapping import (
    MParticleOptions,
)
from pipeline.targets.mparticle.planning import Planning
from pipeline.throttle import Stopped, Throttle
from pipeline.timeutil import parse_timestamp, utcnow

log = logging.getLogger("corrections")

#: How long mParticle is sure to drop a repeated source_request_id (it says 30–60 days).
DEDUPE_WINDOW = timedelta(days=30)


class _Stopped(Exception):
    """The run is stopping: this request is not sent."""


@dataclass(frozen=True)
class MParticleSetup:
    """Everything the mParticle part of a run needs: where, and how to shape corrections."""

    target: MParticleTarget
    options: MParticleOptions = field(default_factory=MParticleOptions)


@dataclass
class MParticleResult:
    """What the mParticle part did, for the summary and the exit code."""

    requests: int = 0
    batches_planned: int = 0
    batches_sent: int = 0
    retries: int = 0
    throttled: int = 0
    elapsed: float = 0.0
    rows_new: int = 0
    rows_done: int = 0
    by_endpoint: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    stop_reason: str | None = None
    fatal: str | None = None
    signal_number: int | None = None
    skipped: str | None = None


class Delivery(Planning):
    """One run's mParticle deliveries over one sheet: planned (`Planning`), then sent."""

    def __init__(self, cp: Checkpoint, setup: MParticleSetup, options: RunOptions, *,
                 run_id: str, generation: int, usermaven: bool, register: bool) -> None:
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
        self._stop: asyncio.Event | None = None  # made inside the event loop
        self._met: set[str] = set()
        self._last_change: dict[str, str] = {}  # event (or lookup) -> its latest change
        self._held: set[str] = set()  # users whose earlier batch was not accepted this run
        self._user_of: dict[str, str] = {}  # batch id -> user key
        self._tasks: set[asyncio.Task[None]] = set()
        self._chains: dict[str, asyncio.Task[None]] = {}
        self._attempts: Counter[str] = Counter()
        self.fatal: BaseException | None = None
        self.throttle: Throttle | None = None

    # -- sending ------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None, reason: str | None = None) -> None:
        if self.result.signal_number is None and signum is not None:
            self.result.signal_number = signum
        if self.result.stop_reason is None:
            self.result.stop_reason = reason or (
                f"received {signal.Signals(signum).name}" if signum else "stopped")
            log.warning("mparticle: stopping: %s; letting requests in flight finish",
                        self.result.stop_reason)
        if self._stop is not None:
            self._stop.set()
        if self.throttle is not None:
            self.throttle.close()  # no batch waiting for its turn or its retry leaves

    @property
    def stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def _fatal(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
            self.result.fatal = str(exc)
        self.request_stop(reason=str(exc))

    async def send(self) -> None:
        """Send every committed batch still pending or failed for this sheet."""
        if self._stop is None:
            self._stop = asyncio.Event()
        todo = self.ledger.resendable(self.generation)
        if not todo:
            return
        todo = self._route_now(todo)
        self._user_of = {p.batch_id: p.user_key for p in todo}
        self._warn_if_stale()
        target = self.setup.target
        self.throttle = Throttle(self.opts.concurrency, self.opts.rate, self.opts.max_wait,
                                 host=urlsplit(target.base_url).hostname or "mParticle")
        self.policy = RetryPolicy(self.opts.max_attempts, self.opts.backoff_base,
                                  self.opts.backoff_max)
        self.stats = RetryStats()
        http = make_http_client(target.base_url, concurrency=self.opts.concurrency,
                                timeout=self.opts.timeout, transport=target.transport)
        window = asyncio.Semaphore(max(4, self.opts.concurrency * 4))
        async with http:
            self.client = MParticleClient(http, target)
            try:
                for group in pack_requests(todo):
                    if self.stopping:
                        break
                    await window.acquire()
                    if self.stopping:
                        window.release()
                        break
                    prev = {self._chains[u.user_key] for u in group
                            if u.user_key in self._chains}
                    task = asyncio.create_task(self._request(group, prev, window))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                    for b in group:
                        self._chains[b.user_key] = task
            finally:
                await self._drain()
                self.result.requests = self.client.requests
                self.result.retries = self.stats.retries
                self.result.throttled = self.stats.throttled

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

    async def _drain(self) -> None:
        stop_wait = asyncio.create_task(self._stop.wait())  # type: ignore[union-attr]
        try:
            while not self.stopping:
                busy = {t for t in self._tasks if not t.done()}
                if not busy:
                    break
                await asyncio.wait(busy | {stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
        busy = {t for t in self._tasks if not t.done()}
        if busy:
            await asyncio.wait(busy, timeout=self.opts.shutdown_grace)
        left = [t for t in self._tasks if not t.done()]
        for t in left:
            t.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)

    async def _request(self, group: list[Pending], prev: set[asyncio.Task[None]],
                       window: asyncio.Semaphore) -> None:
        try:
            if prev:
                await asyncio.wait(prev)
            if self.stopping:
                return
            # a user's later batch waits for the earlier one to be *accepted*: sent after a
            # failure, it would be overtaken by the earlier one's resend on the next run
            held = [p.batch_id for p in group if p.user_key in self._held]
            if held:
                self._record(held, "pending", None, "held back: an earlier correction for "
                             "this user was not accepted; the next run sends both, in order")
            group = [p for p in group if p.user_key not in self._held]
            if group:
                await self._send(self.ledger.bodies(group))
        except Exception as exc:  # a checkpoint that refuses writes, or a fault nobody
            # foresaw: the run stops cleanly (batches stay pending), never a lost task
            self._fatal(checkpoint_write_error(exc)
                        or UnexpectedError(f"mparticle: stopped on {describe(exc)}"))
        finally:
            window.release()

    async def _send(self, batches: list[Outgoing]) -> None:
        path = batches[0].endpoint
        body = request_body(batches)
        ids = [b.batch_id for b in batches]
        tries = 0

        def count(n: int) -> None:
            nonlocal tries
            tries = n

        async def attempt() -> Accepted:
            # a stop asked while this request waited for its turn (or between retries) wins:
            # the batches stay pending for the next run
            if self.stopping:
                raise _Stopped
            return await self.client.post(path, body)

        try:
            assert self.throttle is not None
            answer, _ = await call_with_retry(attempt, throttle=self.throttle,
                                              policy=self.policy, stats=self.stats,
                                              on_attempt=count)
        except (_Stopped, Stopped):
            return
        except RejectedError as exc:
            self._add_attempts(ids, tries)
            if len(batches) > 1 and exc.http_status == 400:
                # one bad batch spoils the request: halve until it stands alone
                half = len(batches) // 2
                log.info("mparticle: 400 for %d batches; splitting to find the one at fault",
                         len(batches))
                await self._send(batches[:half])
                await self._send(batches[half:])
                return
            self._record(ids, "rejected", exc.http_status, str(exc))
            log.warning("mparticle: %s refused %d batch(es): %s", path, len(ids), exc,
                        extra={"event": "mparticle_rejected", "endpoint": path,
                               "http_status": exc.http_status, "error": str(exc)})
            return
        except (AuthError, FatalApiError) as exc:
            self._fatal(exc)
            return
        except RetryAfterTooLong as exc:
            self.request_stop(reason=str(exc))
            return
        except TransientError as exc:
            self._add_attempts(ids, tries)
            if self.stopping and isinstance(exc, TransportFailure):
                return  # cut off by the stop, not the batch's fault: stays pending
            self._record(ids, "failed", exc.http_status, str(exc))
            return
        self._add_attempts(ids, tries)
        if answer.errors:
            # 202 although some batches failed (documented): a batch the errors name by its
            # source_request_id is rejected. Errors naming no batch prove nothing about any
            # one of them: the request is resent in halves (the same bytes per batch, which
            # mParticle drops if it kept them) until each error has its batch.
            log.warning("mparticle: %s answered %s with errors: %s", path, answer.http_status,
                        "; ".join(answer.errors))
            named = {i: [e for e in answer.errors if i in e] for i in ids}
            unnamed = [e for e in answer.errors if not any(i in e for i in ids)]
            if unnamed and len(batches) > 1:
                half = len(batches) // 2
                await self._send(batches[:half])
                await self._send(batches[half:])
                return
            if unnamed:
                named[ids[0]] = list(answer.errors)
            bad = [i for i in ids if named[i]]
            for i in bad:
                self._record([i], "rejected", answer.http_status, "; ".join(named[i]))
            ids = [i for i in ids if not named[i]]
        self._record(ids, "accepted", answer.http_status, None)
        self.result.batches_sent += len(ids)
        by = self.result.by_endpoint
        by[path] = by.get(path, 0) + len(ids)
        log.debug("mparticle: %s accepted %d batch(es)", path, len(ids),
                  extra={"event": "mparticle_accepted", "endpoint": path, "batches": len(ids)})

    def _add_attempts(self, ids: list[str], tries: int) -> None:
        for i in ids:
            self._attempts[i] += tries

    def _record(self, ids: list[str], status: str, http_status: int | None,
                error: str | None) -> None:
        if status not in ("accepted", "rejected"):
            self._held.update(self._user_of.get(i, "") for i in ids)
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
            d._stop = asyncio.Event()
            if early:
                d.request_stop(early[0])
            await d.send()

    asyncio.run(go())
    d.result.elapsed = time.monotonic() - started
    return d.result


def row_counts(cp: Checkpoint, generation: int) -> dict[str, int]:
    return Ledger(cp).row_counts(generation)


def rows_left(counts: dict[str, int]) -> int:
    return sum(n for s, n in counts.items() if s not in DONE and s != "planned")

