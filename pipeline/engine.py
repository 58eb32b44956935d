"""One delivery engine for every target: per-chain order, one mapping of answers to outcomes.

A target hands the engine *sends*: one request's worth of items (one mutation for Usermaven,
up to 100 batches for mParticle) and the chains they belong to (an event, a user). Within a
chain the engine keeps the order the sends were handed in, and a later send waits for the
earlier one's *settled* answer: if the earlier one did not settle (it failed, or the run
stopped before its answer), the later one is held back, not sent. Sent after a failure it
would be overtaken by the earlier one's resend on the next run, and the event (or user) would
end with the older value. The next run sends both, in order.

`attempt` is the one place an answer (or its absence) becomes an outcome; stopping, fatal
answers, the throttle and the drain come from `RunControl`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

from pipeline.errors import (
    ApiError,
    AuthError,
    ConflictError,
    FatalApiError,
    NotFoundError,
    RejectedError,
    RetryAfterTooLong,
    TransientError,
    TransportFailure,
    UntrustedAnswer,
)
from pipeline.model import Status
from pipeline.run_control import RunControl
from pipeline.throttle import Stopped

T = TypeVar("T")

#: What a send does with the chains it was given: told which of them are held back (an
#: earlier send on them did not settle), it returns the chains it leaves unsettled itself.
Send = Callable[[frozenset[str]], Awaitable[Collection[str]]]

#: Outcomes after which a later item of the same chain may be sent: the API answered for good.
SETTLED = frozenset({Status.APPLIED, Status.REJECTED, Status.NOT_FOUND, Status.CONFLICT})

#: What a held-back item's record says.
HELD_BACK = ("held back: an earlier correction in the same order ({chain}) was not applied in "
             "this run; the next run sends both, in order")


@dataclass(frozen=True)
class Answer(Generic[T]):
    """One request's outcome. `APPLIED` is the API's documented success and nothing else;
    `PENDING` means it was never answered because the run stopped (it is sent again)."""

    status: Status
    value: T | None = None
    error: ApiError | None = None
    tries: int = 0

    @property
    def settled(self) -> bool:
        return self.status in SETTLED


def outcome_of(exc: BaseException, stopping: bool) -> Status | None:
    """What a request's exception means for its item; None for a fault nobody foresaw.

    `PENDING`: not the item's fault, it is sent again (the run is stopping: a stop, a fatal
    answer, a Retry-After beyond --max-wait, or a connection the stop cut).
    """
    if isinstance(exc, NotFoundError):
        return Status.NOT_FOUND
    if isinstance(exc, ConflictError):
        return Status.CONFLICT
    if isinstance(exc, RejectedError):
        return Status.REJECTED
    if isinstance(exc, (AuthError, FatalApiError, RetryAfterTooLong, Stopped)):
        return Status.PENDING
    if isinstance(exc, TransientError):
        return Status.PENDING if stopping and isinstance(exc, TransportFailure) else Status.FAILED
    if isinstance(exc, UntrustedAnswer):
        return Status.FAILED
    return None


class Engine(RunControl):
    """The sending half of a run, shared by every target (`RunControl` is its stopping half)."""

    def __init__(self, **control: Any) -> None:
        super().__init__(**control)
        self._last: dict[str, asyncio.Task[None]] = {}  # chain -> its latest send
        self._unsettled: set[str] = set()  # chains whose send did not settle this run

    def start(self, chains: Collection[str], send: Send) -> asyncio.Task[None]:
        """Start `send` once the earlier sends of its chains are done; tracked, so a stop
        drains or cancels it with the rest of the run."""
        keys = frozenset(chains)
        earlier = {self._last[k] for k in keys if k in self._last}
        task = asyncio.create_task(self._in_order(keys, earlier, send))
        self._track(task)
        for k in keys:
            self._last[k] = task
        task.add_done_callback(partial(self._forget, keys))
        return task

    async def _in_order(self, keys: frozenset[str], earlier: set[asyncio.Task[None]],
                        send: Send) -> None:
        try:
            if earlier:
                await asyncio.wait(earlier)
            unsettled = await send(frozenset(k for k in keys if k in self._unsettled))
        except BaseException:
            self._unsettled.update(keys)  # cancelled or broken: nothing after it in order
            raise
        self._unsettled.update(unsettled)

    def _forget(self, keys: frozenset[str], task: asyncio.Task[None]) -> None:
        for k in keys:
            if self._last.get(k) is task:
                del self._last[k]

    async def attempt(self, request: Callable[[], Awaitable[T]],
                      on_attempt: Callable[[int], None] | None = None) -> Answer[T]:
        """One request with retries under the throttle, and what its answer means.

        A stop asked while the request waited for its turn (or between retries) wins: it is
        not sent. A fatal answer stops the run the moment it arrives (`RunControl._call`).
        """
        tries = 0

        def count(n: int) -> None:
            nonlocal tries
            tries = n
            if on_attempt is not None:
                on_attempt(n)

        async def once() -> T:
            if self.stopping:
                raise Stopped
            return await request()

        if self.stopping:
            return Answer(Status.PENDING)
        try:
            value, _ = await self._call(once, on_attempt=count)
        except Exception as exc:
            status = outcome_of(exc, self.stopping)
            if status is None:
                raise
            error = exc if isinstance(exc, ApiError) and status is not Status.PENDING else None
            return Answer(status, error=error, tries=tries)
        return Answer(Status.APPLIED, value, tries=tries)
