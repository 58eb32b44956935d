"""The run: resolve rows, decide keys, send mutations, record everything, stop cleanly.

Three stages, all inside one event loop:

1. the dispatcher reads the sheet batch by batch, registers it in the checkpoint and starts a
   resolution task per row that still needs work (a bounded number at a time);
2. the sequencer takes rows back *in sheet order*, decides each event's idempotency key and
   whether anything needs sending, and commits those intents before anything is sent;
3. mutation tasks send under the throttle; two rows touching one event are chained, so they
   are applied in sheet order and never concurrently.

How the run stops lives in `pipeline.run_control`; its plain data in `pipeline.run_types`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import partial
from typing import Any

from pipeline.checkpoint import Checkpoint, Intent, RowState
from pipeline.decide import RESEND, Decider
from pipeline.engine import HELD_BACK, SETTLED, Engine, outcome_of
from pipeline.faults import checkpoint_write_error, describe
from pipeline.jsontypes import holds
from pipeline.model import Correction, FoundEvent, RowProblem, Status, Window
from pipeline.progress import RunProgress
from pipeline.retry import RetryPolicy
from pipeline.run_types import (  # RunOptions, RunResult, RunTotals: re-exported
    EventTarget,
    RunOptions,
    RunResult,
    RunTotals,
    outcome_fields,
    row_status,
)
from pipeline.targets.usermaven.client import UsermavenClient
from pipeline.targets.usermaven.refresh import current_state
from pipeline.targets.usermaven.resolve import LookupCache, LookupIncomplete, Resolution, Resolver
from pipeline.timeutil import month_window, parse_timestamp, utcnow

log = logging.getLogger("corrections")


@dataclass
class RowJob:
    """A row in work: its resolution task, its events' outcomes, its window slot."""

    correction: Correction
    state: RowState | None
    prepared: asyncio.Task[tuple[Resolution, list[EventTarget], list[Intent]]]
    window: asyncio.Semaphore
    outcomes: dict[str, Status] = field(default_factory=dict)
    pending: int = 0
    final_error: str | None = None
    dispatched: bool = False
    released: bool = False

    def release(self) -> None:
        """Give the row's window slot back, once, whatever path the row ended on."""
        if not self.released:
            self.released = True
            self.window.release()


class Runner(Engine):
    """One run over one sheet. Import it and call `run` from a notebook if you like."""

    def __init__(self, checkpoint: Checkpoint, client: UsermavenClient, options: RunOptions,
                 *, run_id: str, generation: int,
                 on_row: Callable[[int, Status, str | None], None] | None = None,
                 progress: RunProgress | None = None) -> None:
        self.cp = checkpoint
        self.client = client
        self.opts = options
        self.run_id = run_id
        self.generation = generation
        self.on_row = on_row
        self.progress = progress or RunProgress(None, enabled=False)
        super().__init__(
            concurrency=options.concurrency, rate=options.rate, max_wait=options.max_wait,
            policy=RetryPolicy(options.max_attempts, options.backoff_base, options.backoff_max),
            shutdown_grace=options.shutdown_grace, host=getattr(client, "host", "the API"))
        self.cache = LookupCache(self._lookup_once)
        self.resolver = Resolver(self.cache, options.on_multiple)
        self.totals = RunTotals()
        self.decider = Decider(checkpoint, options)  # keys and no-op checks, in sheet order

    # -- the run ------------------------------------------------------------------------

    async def run(self, batches: Iterable[list[Correction | RowProblem]]) -> RunResult:
        started = time.monotonic()
        window = asyncio.Semaphore(max(64, self.opts.concurrency * 16))
        queue: asyncio.Queue[RowJob | None] = asyncio.Queue()
        sequencer = asyncio.create_task(self._sequence(queue, window))
        try:
            for batch in batches:
                # after a stop the rest of the sheet is still registered (offline, no
                # request), so the report lists every row
                reg = self.cp.register(batch, self.generation, self.run_id,
                                       retry_unresolved=self.opts.retry_unresolved)
                self.totals.rows_new += reg.new
                self.totals.rows_done += reg.done
                self.totals.rows_invalid += reg.invalid
                self.totals.rows_duplicate += reg.duplicate
                self.progress.skipped(reg.done + reg.duplicate)
                for item in batch:
                    if isinstance(item, RowProblem):
                        self.progress.row(Status.INVALID)
                        if self.on_row is not None:
                            self.on_row(item.row_number, Status.INVALID, str(item))
                for correction, state in reg.todo:
                    if not await self._acquire(window):
                        break
                    task = asyncio.create_task(self._prepare(correction, state))
                    self._track(task)
                    await queue.put(RowJob(correction, state, task, window))
                    self.totals.rows_worked += 1
                # let the loop breathe between batches even when every row was skipped
                await asyncio.sleep(0)
        except Exception as exc:  # the checkpoint or the sheet failed between rows
            if checkpoint_write_error(exc) is None:
                raise
            self._broken(exc)
        finally:
            await queue.put(None)
            await self._drain(sequencer)
            try:
                self.cp.commit()
            except Exception as exc:
                self._broken(exc)
        return self._result(started)

    def _result(self, started: float) -> RunResult:
        return RunResult(run_id=self.run_id, elapsed=time.monotonic() - started,
                         requests=self.client.requests, lookups=self.cache.requests,
                         mutations=self.totals.mutations_sent, retries=self.stats.retries,
                         throttled=self.stats.throttled, totals=self.totals,
                         stop_reason=self.stop_reason,
                         fatal=str(self.fatal) if self.fatal else None,
                         signal_number=self.signal_number, rows_new=self.totals.rows_new,
                         rows_done=self.totals.rows_done)

    # -- stage 1: resolution --------------------------------------------------------------

    async def _lookup_once(self, event_type: str, key: str, value: str,
                           window: Window) -> tuple[list[FoundEvent], int]:
        result, _ = await self._call(
            lambda: self.client.lookup(event_type, key, value, window))
        return result

    async def _prepare(self, c: Correction, state: RowState | None
                       ) -> tuple[Resolution, list[EventTarget], list[Intent]]:
        """Find the row's events, or pick up the intents an earlier run committed."""
        recheck = self.opts.retry_unresolved and state is not None and any(
            i.status is Status.DRIFTED for i in state.intents)
        if state and state.intents and not recheck:
            intents = [
                await self._reconcile_if_stale(c, i) if i.status in RESEND
                # a mutation's 404 is unresolved too: --retry-unresolved resends it (same key)
                else replace(i, status=Status.PENDING)
                if i.status is Status.NOT_FOUND and self.opts.retry_unresolved else i
                for i in state.intents
            ]
            return Resolution(Status.PENDING), [], intents
        if c.event_id is not None:
            assert c.timestamp is not None
            before = c.known_before
            if c.refresh:
                before = (await current_state(self.cache, c)).attributes
            return Resolution(Status.PENDING), [EventTarget(c.event_id, c.timestamp, before)], []
        resolution = await self.resolver.resolve(c)
        targets = [EventTarget(e.event_id, e.timestamp, e.attributes) for e in resolution.events]
        return resolution, targets, []

    async def _reconcile_if_stale(self, c: Correction, intent: Intent) -> Intent:
        """An unanswered intent older than --key-ttl: the API may have forgotten its key.

        If the event already holds the values, record it applied (without a mutation_id)
        instead of resending; otherwise resend under the same key.
        """
        if not intent.intent_at or c.event_id is not None or c.lookup_key is None:
            return intent
        age = utcnow() - parse_timestamp(intent.intent_at)
        if age < timedelta(seconds=self.opts.key_ttl):
            return intent
        assert c.event_type is not None and c.lookup_value is not None
        window = Window(*month_window(parse_timestamp(intent.timestamp)))
        try:  # the whole month, full pages split, every answer checked against the query
            found = await self.resolver.find_all(c.event_type, c.lookup_key, c.lookup_value,
                                                 window)
        except LookupIncomplete:
            found = []  # cannot tell: resend under the same key (the API applies it once)
        for e in found:
            if e.event_id == intent.event_id and holds(e.attributes, intent.attributes_after,
                                                       intent.merge_mode):
                self.cp.record_outcome(
                    intent.row_key, intent.event_id, Status.APPLIED, run_id=self.run_id,
                    attempts=intent.attempts, mutation_id="",
                    note="reconciled: the event already held the values after the key's "
                         "lifetime passed; not resent",
                )
                self.totals.reconciled += 1
                return replace(intent, status=Status.APPLIED)
        self.cp.refresh_intent_time(intent.row_key, intent.event_id)
        return intent

    # -- stage 2: the sequencer ---------------------------------------------------------

    async def _sequence(self, queue: asyncio.Queue[RowJob | None],
                        window: asyncio.Semaphore) -> None:
        """Rows in sheet order; rows already resolved are taken together, so their intents
        share one commit."""
        held: list[RowJob | None] = []
        while True:
            job = held.pop() if held else await queue.get()
            if job is None:
                return
            await asyncio.wait({job.prepared})
            group = [job]
            while len(group) < 256 and not queue.empty():
                nxt = queue.get_nowait()
                if nxt is None or not nxt.prepared.done():
                    held.append(nxt)
                    break
                group.append(nxt)
            if self.stopping:
                # nothing more is decided or sent; the rows keep their status for the next run
                for j in group:
                    if not j.prepared.cancelled():
                        j.prepared.exception()  # retrieved: a stop explains it
                    j.release()
                continue
            try:
                planned = [(j, self._plan_row(j, window)) for j in group]
                fresh = [i for _, p in planned if p is not None and p[1] for i in p[0]]
                if fresh:
                    self.cp.record_intents(fresh, self.run_id)
                for j, p in planned:
                    if p is not None:
                        self._dispatch(j, p[0], window)
            except Exception as exc:  # the checkpoint failed: nothing of this group leaves
                self._broken(exc)
                for j in group:
                    if not j.dispatched:
                        j.release()

    def _plan_row(self, job: RowJob,
                  window: asyncio.Semaphore) -> tuple[list[Intent], bool] | None:
        """The row's intents (and whether they are new), or None when the row is finished."""
        c = job.correction
        try:
            resolution, targets, existing = job.prepared.result()
        except asyncio.CancelledError:
            job.release()
            raise
        except Exception as exc:
            status = outcome_of(exc, self.stopping)
            if status is Status.PENDING:
                job.release()  # the run is stopping: the row keeps its status for the next
                return None
            if status is not None:
                what = {Status.NOT_FOUND: "lookup", Status.REJECTED: "lookup refused"}
                self._finish_row(job, status if status in what else Status.FAILED,
                                 f"{what.get(status, 'lookup failed')}: {exc}", window)
                return None
            if checkpoint_write_error(exc) is not None:  # a storage fault: the run stops
                self._broken(exc)
                job.release()
                return None
            self._finish_row(job, Status.FAILED, f"lookup: {describe(exc)}", window)
            return None
        if resolution.status is not Status.PENDING:
            self._finish_row(job, resolution.status, resolution.error, window)
            return None
        if existing:
            self.decider.hold_resumed(c, existing)
            return existing, False
        return self.decider.decide(c, targets), True

    def _dispatch(self, job: RowJob, intents: list[Intent], window: asyncio.Semaphore) -> None:
        """Start sending a row's intents (committed by now), in order per event."""
        job.dispatched = True
        to_send = [i for i in intents if i.status in RESEND]
        for i in intents:
            if i.status not in RESEND:
                job.outcomes[i.event_id] = i.status
        if not to_send or self.opts.plan_only or self.stopping:
            for i in to_send:
                job.outcomes[i.event_id] = Status.PENDING
            self._finish_row(job, row_status(job.outcomes.values()), None, window)
            return
        job.pending = len(to_send)
        for intent in to_send:
            self.start((intent.chain,), partial(self._send, job, intent, window))

    def _finish_row(self, job: RowJob, status: Status, error: str | None,
                    window: asyncio.Semaphore) -> None:
        try:
            self.cp.set_row_status(job.correction.row_key, status, self.run_id, error)
            self.cp.commit_if_due()
        except Exception as exc:
            self._broken(exc)
            return
        finally:
            job.release()
        self.progress.retries = self.stats.retries
        self.progress.row(status)
        if self.on_row is not None:
            self.on_row(job.correction.row_number, status, error)

    # -- stage 3: sending ---------------------------------------------------------------

    async def _send(self, job: RowJob, intent: Intent, window: asyncio.Semaphore,
                    held: frozenset[str]) -> tuple[str, ...]:
        """One intent's mutation (or its holding back), recorded; the row ends with its last."""
        kw: dict[str, Any] = {}
        status = Status.PENDING
        try:
            if held:
                kw = {"attempts": intent.attempts,
                      "error": HELD_BACK.format(chain=f"event {intent.event_id}")}
            else:
                try:
                    status, kw = await self._mutate(intent)
                except Exception as exc:  # an answer nobody foresaw: fails, retryable
                    status, kw = Status.FAILED, {"attempts": intent.attempts + 1,
                                                 "error": describe(exc)}
            job.outcomes[intent.event_id] = status
            if held or status is not Status.PENDING or kw.get("attempts", 0) > intent.attempts:
                try:
                    self.cp.record_outcome(intent.row_key, intent.event_id, status,
                                           run_id=self.run_id, **kw)
                except Exception as exc:
                    self._broken(exc)
        finally:
            job.outcomes.setdefault(intent.event_id, Status.PENDING)
            job.pending -= 1
            if job.pending == 0:
                if self.fatal is not None and checkpoint_write_error(self.fatal):
                    job.release()  # nothing more can be written; the next run takes it up
                else:
                    self._finish_row(job, row_status(job.outcomes.values()),
                                     kw.get("error"), window)
        return () if status in SETTLED else (intent.chain,)

    async def _mutate(self, intent: Intent) -> tuple[Status, dict[str, Any]]:
        def count(n: int) -> None:
            if n == 1:
                self.totals.mutations_sent += 1

        answer = await self.attempt(
            lambda: self.client.mutate(intent.event_id, intent.timestamp,
                                       intent.attributes_after, intent.merge_mode,
                                       intent.idempotency_key),
            on_attempt=count)
        if answer.status is Status.APPLIED:
            assert answer.value is not None
            return Status.APPLIED, {"attempts": intent.attempts + answer.tries,
                                    "mutation_id": answer.value.mutation_id,
                                    "http_status": answer.value.http_status}
        if answer.error is None:
            return answer.status, {"attempts": intent.attempts + answer.tries}
        return answer.status, outcome_fields(intent, answer.tries, answer.error)
