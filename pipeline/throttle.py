"""Politeness: every request passes one gate that pauses, paces and adapts.

- a shared pause: a `Retry-After` seen by one worker holds back all of them;
- a request-rate ceiling (`--rate`, via aiolimiter);
- adaptive concurrency: halved when the API pushes back (429/503), regrown by one slot per
  window of successes, never above `--concurrency`;
- a stop: once `close()`d, no request gets a turn any more (those already on the wire
  finish), and every pause or backoff wait ends at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from contextlib import suppress
from typing import TYPE_CHECKING

from pipeline.breaker import Breaker, default_threshold
from pipeline.errors import RetryAfterTooLong

if TYPE_CHECKING:
    from aiolimiter import AsyncLimiter


class Stopped(Exception):
    """The run is stopping: this request does not leave."""


class Throttle:
    def __init__(self, concurrency: int, rate: float | None = None,
                 max_wait: float = 300.0, *, host: str = "the API") -> None:
        self.max_limit = max(1, concurrency)
        #: every request's outcome passes the same gate, so one breaker sees them all
        self.breaker = Breaker(default_threshold(concurrency), host)
        self.limit = float(self.max_limit)
        self.max_wait = max_wait
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._resume_at = 0.0
        self._rate: AsyncLimiter | None = None
        if rate:
            # loaded only with --rate: aiolimiter reads its installed metadata on import
            from aiolimiter import AsyncLimiter

            self._rate = AsyncLimiter(rate, 1.0)
        self.pauses = 0
        self.cuts = 0
        self._closed = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """Stop means stop: no request waiting for its turn (or its retry) leaves any more."""
        self._closed.set()
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(Stopped())
                fut.exception()  # retrieved here; the waiter re-raises it itself

    async def sleep(self, seconds: float) -> None:
        """A backoff wait that a stop cuts short."""
        if seconds > 0 and not self.closed:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), seconds)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def pause(self, seconds: float) -> None:
        """Hold every worker back for `seconds` (never shortening a pause already running)."""
        if seconds > self.max_wait:
            raise RetryAfterTooLong(
                f"the API asked to wait {seconds:.0f} s, more than --max-wait "
                f"{self.max_wait:.0f} s; stopping cleanly, rows stay pending for the next run"
            )
        resume_at = time.monotonic() + seconds
        if resume_at > self._resume_at:
            self._resume_at = resume_at
            self.pauses += 1

    async def _wait_for_pause(self) -> None:
        while (delay := self._resume_at - time.monotonic()) > 0 and not self.closed:
            await self.sleep(delay)
        if self.closed:
            raise Stopped

    def slot(self) -> _Slot:
        """One request's turn (`async with throttle.slot():`): after any pause, within the
        rate and the current limit. A plain object, not a generator: every request takes one,
        and the common case (no pause, a free place) costs no extra coroutine."""
        return _Slot(self)

    async def _enter(self) -> None:
        if self._resume_at > time.monotonic() or self._closed.is_set():
            await self._wait_for_pause()
        if self._in_flight < int(self.limit) and not self._waiters:
            self._in_flight += 1
        else:
            # wait in line; a finishing request hands its place over directly (FIFO)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except Stopped:
                raise
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    self._release()  # the place was handed to us: pass it on
                elif fut in self._waiters:
                    # a cancelled future may already have been dropped by `_wake`
                    self._waiters.remove(fut)
                raise
        try:
            if self._rate is not None:
                await self._rate.acquire()
            if self._resume_at > time.monotonic() or self._closed.is_set():
                await self._wait_for_pause()  # raises Stopped once the run stops
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        self._in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._in_flight < int(self.limit):
            fut = self._waiters.popleft()
            if not fut.done():
                self._in_flight += 1
                fut.set_result(None)

    def on_success(self) -> None:
        if self.limit < self.max_limit:
            # additive increase: about one slot per `limit` successes
            self.limit = min(float(self.max_limit), self.limit + 1.0 / self.limit)
            self._wake()

    def on_pushback(self) -> None:
        """Multiplicative decrease when the API says it is overloaded."""
        new = max(1.0, self.limit / 2)
        if new < self.limit:
            self.cuts += 1
        self.limit = new


class _Slot:
    """`Throttle.slot()`'s context: the place is taken on entry and given back on exit."""

    __slots__ = ("_throttle",)

    def __init__(self, throttle: Throttle) -> None:
        self._throttle = throttle

    async def __aenter__(self) -> None:
        await self._throttle._enter()

    async def __aexit__(self, *exc: object) -> None:
        self._throttle._release()
