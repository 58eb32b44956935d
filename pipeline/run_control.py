"""How a run stops: the stop flag, fatal answers, the window of rows in work, the drain.

Stop means stop: once `request_stop` is called (a signal, a 401/403 or another fatal answer,
an outage, a checkpoint that refuses writes) the throttle is closed, so no request waiting
for its turn or its retry leaves; only those already on the wire finish, bounded by
`--shutdown-grace`. Every task of the run is tracked, so a stop cancels and awaits all of them
before the HTTP session closes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pipeline.errors import AuthError, FatalApiError, RetryAfterTooLong, UnexpectedError
from pipeline.faults import checkpoint_write_error, describe
from pipeline.retry import RetryPolicy, RetryStats, call_with_retry
from pipeline.throttle import Throttle

log = logging.getLogger("corrections")
T = TypeVar("T")


class RunControl:
    """The stopping half of `Runner` (which adds rows, keys and sending)."""

    def __init__(self, *, concurrency: int, rate: float | None, max_wait: float,
                 policy: RetryPolicy, shutdown_grace: float, host: str) -> None:
        self.throttle = Throttle(concurrency, rate, max_wait, host=host)
        self.policy = policy
        self.stats = RetryStats()
        self.shutdown_grace = shutdown_grace
        self.stop_reason: str | None = None
        self.fatal: BaseException | None = None
        self._signal: int | None = None
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    def request_stop(self, signum: int | None = None, reason: str | None = None) -> None:
        """Stop starting work; what is in flight may finish (bounded by shutdown_grace)."""
        if self._signal is None and signum is not None:
            self._signal = signum
        if self.stop_reason is None:
            self.stop_reason = reason or (
                f"received {signal.Signals(signum).name}" if signum else "stopped")
            log.warning("stopping: %s; letting requests in flight finish", self.stop_reason)
        self._stop.set()
        self.throttle.close()  # no request waiting for its turn or its retry leaves any more

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _fatal(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
        self.request_stop(reason=str(exc))

    def _broken(self, exc: BaseException) -> None:
        """A fault of the checkpoint (or of our own code) outside any row: stop the run."""
        failure: Exception | None = checkpoint_write_error(exc)
        if failure is None:
            log.error("internal error: %s", describe(exc), exc_info=exc)
            failure = UnexpectedError(f"stopped on an internal error: {describe(exc)}")
        self._fatal(failure)

    async def _acquire(self, window: asyncio.Semaphore) -> bool:
        """A window slot for the next row, or False once the run stops (even while waiting)."""
        if self.stopping:
            return False
        if not window.locked():
            await window.acquire()
            return True
        got = asyncio.ensure_future(window.acquire())
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({got, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not got.done():
            got.cancel()
            await asyncio.gather(got, return_exceptions=True)
        if got.done() and not got.cancelled():
            if not self.stopping:
                return True
            window.release()
        return False

    def _track(self, task: asyncio.Task[Any]) -> None:
        """Every task of the run is known, so a stop can wait for (or cancel) all of them
        before the HTTP session closes."""
        self._tasks.add(task)
        task.add_done_callback(self._untrack)

    def _untrack(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the sequencer reads it, or a stop made it moot

    async def _drain(self, sequencer: asyncio.Task[None] | None = None) -> None:
        """Wait for all work in flight; once a stop is asked, only `shutdown_grace` more."""
        lead = () if sequencer is None else (sequencer,)
        stop_wait = asyncio.create_task(self._stop.wait())
        try:
            while not self.stopping:
                busy = {t for t in (*lead, *self._tasks) if not t.done()}
                if not busy:
                    break
                await asyncio.wait(busy | {stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
        busy = {t for t in (*lead, *self._tasks) if not t.done()}
        if busy:
            await asyncio.wait(busy, timeout=self.shutdown_grace)
        leftovers = [t for t in (*lead, *self._tasks) if not t.done()]
        for t in leftovers:
            t.cancel()
        if leftovers:
            await asyncio.gather(*leftovers, return_exceptions=True)
        if sequencer is not None and sequencer.done() and not sequencer.cancelled() \
                and (exc := sequencer.exception()) is not None:
            raise exc

    @property
    def signal_number(self) -> int | None:
        return self._signal

    async def _call(self, fn: Callable[[], Awaitable[T]],
                    on_attempt: Callable[[int], None] | None = None) -> tuple[T, int]:
        """One request with retries; a fatal answer stops the run the moment it arrives.

        Not later, when the sequencer reaches the row: requests waiting for their turn
        behind it must not leave.
        """
        try:
            return await call_with_retry(fn, throttle=self.throttle, policy=self.policy,
                                         stats=self.stats, on_attempt=on_attempt)
        except (AuthError, FatalApiError) as exc:
            self._fatal(exc)
            raise
        except RetryAfterTooLong as exc:
            self.request_stop(reason=str(exc))
            raise
