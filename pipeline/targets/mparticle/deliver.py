"""The mParticle part of a run: plan deliveries per row, commit them, send, record answers.

It runs after the Usermaven part (when both are targeted), so each corrected event's time and
idempotency key come from the Usermaven lookup already in the checkpoint. Planning happens
sheet chunk by sheet chunk and is committed before any request leaves; sending then streams
the committed batches (new ones and any left pending or failed by earlier runs) in requests of
up to 100 batches, paced by the same throttle and retry policy as Usermaven's mutations.
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

from pipeline.checkpoint import Checkpoint, Intent
from pipeline.client import make_http_client
from pipeline.errors import (
    AuthError,
    FatalApiError,
    RejectedError,
    RetryAfterTooLong,
    TransientError,
    TransportFailure,
)
from pipeline.keys import canonical_json, per_event_key
from pipeline.model import Correction, RowProblem, Status
from pipeline.retry import RetryPolicy, RetryStats, call_with_retry
from pipeline.runner import RunOptions
from pipeline.signals import on_loop
from pipeline.targets.mparticle.batching import (
    Outgoing,
    PlannedDelivery,
    build_batches,
    pack_requests,
    request_body,
    route,
)
from pipeline.targets.mparticle.client import Accepted, MParticleClient, MParticleTarget
from pipeline.targets.mparticle.ledger import DONE, Ledger, Pending, Placeholder
from pipeline.targets.mparticle.mapping import (
    NO_TIME,
    MParticleOptions,
    Source,
    User,
    check_row,
    custom_event,
    sheet_source,
    source_message_id,
    user_attributes,
    user_attributes_key,
    user_of,
)
from pipeline.throttle import Stopped, Throttle
from pipeline.timeutil import parse_timestamp, utcnow

log = logging.getLogger("corrections")

#: How long mParticle is sure to drop a repeated source_request_id (it says 30–60 days).
DEDUPE_WINDOW = timedelta(days=30)
#: Usermaven row outcomes that mean "no event to attach the correction to".
_UNRESOLVED = {Status.NOT_FOUND.value, Status.AMBIGUOUS.value}


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


class Delivery:
    """One run's mParticle deliveries over one sheet."""

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

    # -- planning (offline, committed before sending) -------------------------------------

    def plan(self, batches: Iterable[list[Correction | RowProblem]]) -> None:
        now = utcnow()
        status = "planned" if self.opts.plan_only else "pending"
        for items in batches:
            # a row met twice in one sheet is `duplicate`: only its first sighting is planned
            corrections = []
            for c in items:
                if isinstance(c, Correction) and c.row_key not in self._met:
                    self._met.add(c.row_key)
                    corrections.append(c)
            if self.register:
                reg = self.cp.register(items, self.generation, self.run_id)
                self.result.rows_new += reg.new
            done = self.ledger.delivered_rows([c.row_key for c in corrections])
            self.result.rows_done += len(done)
            todo = [c for c in corrections if c.row_key not in done]
            if not todo:
                continue
            planned, placeholders = self._plan_rows(todo)
            built, too_big = build_batches(planned, self.mp, now)
            placeholders += [Placeholder(d.row_key, "invalid", p.for_row(d.row_number))
                             for d, p in too_big]
            self.ledger.commit_plan([c.row_key for c in todo], built, placeholders,
                                    status=status, run_id=self.run_id)
            self.result.batches_planned += len(built)

    def _plan_rows(self, todo: list[Correction]) -> tuple[list[PlannedDelivery],
                                                           list[Placeholder]]:
        intents: dict[str, list[Intent]] = {}
        row_states: dict[str, tuple[str, str | None]] = {}
        if self.usermaven and self.mp.mode == "event":
            keys = [c.row_key for c in todo]
            intents = self.cp.intents_for(keys)
            row_states = self._row_states(keys)
        planned: list[PlannedDelivery] = []
        placeholders: list[Placeholder] = []
        owners_here: dict[str, int] = {}
        candidates: list[tuple[Correction, User, list[Source]]] = []
        for c in todo:
            problem = check_row(c, self.mp)
            if problem is not None:
                placeholders.append(Placeholder(c.row_key, "invalid",
                                                problem.for_row(c.row_number)))
                continue
            user = user_of(c)
            assert isinstance(user, User)
            sources = self._sources(c, intents, row_states)
            if isinstance(sources, Placeholder):
                placeholders.append(sources)
                continue
            candidates.append((c, user, sources))
        smids = [source_message_id(s.correction_key) for _, _, ss in candidates for s in ss]
        owners = self.ledger.message_owners(smids)
        for c, user, sources in candidates:
            for seq, s in enumerate(sources):
                smid = source_message_id(s.correction_key)
                subject = s.event_id or f"lookup:{c.event_type}:{c.lookup_key}={c.lookup_value}"
                change = canonical_json([dict(c.attributes), c.merge_mode])
                last = self._last_change.get(subject)
                self._last_change[subject] = change
                taken = owners.get(smid, c.row_key) != c.row_key or smid in owners_here
                if taken and last is not None and last != change:
                    # A → B → A: the second A is a correction of its own (as Usermaven's keys
                    # make it), not a duplicate of the first
                    s = Source(per_event_key(s.correction_key, f"{subject}|after|{last}"),
                               s.event_id, s.event_time)
                    smid = source_message_id(s.correction_key)
                    owners.update(self.ledger.message_owners([smid]))
                owner = owners.get(smid)
                if owner is not None and owner != c.row_key:
                    placeholders.append(Placeholder(c.row_key, "duplicate",
                                                    "same correction as an earlier row"))
                    continue
                if smid in owners_here:
                    placeholders.append(Placeholder(
                        c.row_key, "duplicate", f"same correction as row {owners_here[smid]}"))
                    continue
                owners_here[smid] = c.row_number
                planned.append(self._delivery(c, user, s, seq, smid))
        return planned, placeholders

    def _sources(self, c: Correction, intents: dict[str, list[Intent]],
                 row_states: dict[str, tuple[str, str | None]]) -> list[Source] | Placeholder:
        """The events a row's correction is about, each with its key and original time."""
        if self.mp.mode == "user-attributes":
            return [Source(user_attributes_key(c, self.opts.key_namespace), c.event_id, None)]
        if not self.usermaven:
            source = sheet_source(c, self.opts.key_namespace)
            if source.event_time is None:
                return Placeholder(c.row_key, "invalid", NO_TIME.for_row(c.row_number))
            return [source]
        found = intents.get(c.row_key)
        if found:
            # an event whose guard failed is left alone on every target
            kept = [i for i in found if i.status is not Status.DRIFTED]
            if not kept:
                return Placeholder(c.row_key, Status.DRIFTED.value,
                                   f"usermaven guard: {found[0].note or 'the event changed'}")
            return [Source(i.idempotency_key, i.event_id, parse_timestamp(i.timestamp))
                    for i in kept]
        status, error = row_states.get(c.row_key, ("pending", None))
        if status in _UNRESOLVED:
            return Placeholder(c.row_key, status, f"usermaven lookup: {error}" if error
                               else "the Usermaven lookup found no single event")
        return Placeholder(c.row_key, "pending",
                           "waiting for the Usermaven lookup to name the event; rerun to "
                           f"deliver (usermaven status {status}"
                           + (f": {error})" if error else ")"))

    def _delivery(self, c: Correction, user: User, s: Source, seq: int,
                  smid: str) -> PlannedDelivery:
        d = PlannedDelivery(row_key=c.row_key, row_number=c.row_number,
                            event_key=s.correction_key, seq=seq, source_message_id=smid,
                            user=user, event_id=s.event_id, event_time=s.event_time)
        if self.mp.mode == "user-attributes":
            d.user_attributes = user_attributes(c)
        else:
            d.event = custom_event(c, s, self.mp)
        return d

    def _row_states(self, keys: list[str]) -> dict[str, tuple[str, str | None]]:
        out: dict[str, tuple[str, str | None]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for key, status, error in self.cp.db.execute(
                    f"SELECT row_key, status, error FROM rows WHERE row_key IN ({marks})",
                    chunk):
                out[key] = (status, error)
        return out

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

