"""Retry policy: exponential backoff with full jitter (tenacity), honouring `Retry-After`.

Only `TransientError`s are retried, always with the same request (so the same idempotency
key). A server's `Retry-After` is a floor: jitter is added on top, never taken off, and the
pause is shared by all workers through the throttle.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from pipeline.errors import ApiError, RateLimited, TransientError, TransportFailure
from pipeline.throttle import Throttle

if TYPE_CHECKING:
    from tenacity import RetryCallState

# tenacity is loaded on the first failure: a run whose requests all succeed never needs it

T = TypeVar("T")
log = logging.getLogger("corrections.retry")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_base: float = 0.5   # seconds; the first retry waits up to this
    backoff_max: float = 30.0   # cap of one backoff wait


@dataclass
class RetryStats:
    retries: int = 0
    throttled: int = 0


class _Wait:
    """Full jitter, but never less than the server's Retry-After."""

    def __init__(self, policy: RetryPolicy) -> None:
        from tenacity import wait_random_exponential

        self._jitter = wait_random_exponential(multiplier=policy.backoff_base,
                                               max=policy.backoff_max)

    def __call__(self, state: RetryCallState) -> float:
        jitter = self._jitter(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return exc.retry_after + random.uniform(0, min(1.0, exc.retry_after * 0.1))
        return jitter


async def call_with_retry(
    fn: Callable[[], Awaitable[T]],
    *,
    throttle: Throttle,
    policy: RetryPolicy,
    stats: RetryStats,
    on_attempt: Callable[[int], None] | None = None,
) -> tuple[T, int]:
    """Run `fn` in a throttle slot until it succeeds, fails for good, or attempts run out.

    Returns the result and the number of attempts made; on giving up, the last exception is
    raised with an `attempts` attribute (attempts that actually left). Most calls succeed at
    once, so the first attempt runs without tenacity's machinery; a failure hands over to it
    as its attempt 1. Once the throttle is closed (the run stops), no attempt leaves and a
    backoff wait ends at once: `Stopped` is raised.
    """
    attempts = 0
    breaker = throttle.breaker
    answers_before = breaker.answers

    async def watched() -> T:
        """`fn`, with its outcome told to the breaker (which may trip on a failure)."""
        try:
            result = await fn()
        except TransportFailure as exc:
            breaker.failed(exc)
            raise
        except ApiError as exc:
            if exc.http_status is not None:
                breaker.answered()
            raise
        breaker.answered()
        return result

    try:
        async with throttle.slot():
            attempts = 1
            if on_attempt is not None:
                on_attempt(1)
            result = await watched()
        throttle.on_success()
        return result, 1
    except TransientError as exc:
        first: TransientError | None = exc
        if policy.max_attempts <= 1:
            exc.attempts = 1  # type: ignore[attr-defined]
            if isinstance(exc, TransportFailure):
                breaker.gave_up(exc, answers_before)
            raise
    except BaseException as exc:
        exc.attempts = attempts  # type: ignore[attr-defined]
        raise
    from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

    def before_sleep(state: RetryCallState) -> None:
        stats.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited) or getattr(exc, "http_status", None) == 503:
            stats.throttled += 1
            throttle.on_pushback()
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None:
                throttle.pause(retry_after)
                log.info("the API asked to slow down: every worker pauses %.1f s", retry_after,
                         extra={"event": "throttle", "retry_after": retry_after,
                                "concurrency_limit": int(throttle.limit)})
        wait = state.next_action.sleep if state.next_action else 0.0
        log.info("retry %d after %s (waiting %.2f s)", state.attempt_number, exc, wait,
                 extra={"event": "retry", "attempt": state.attempt_number, "wait": wait,
                        "error": str(exc), "http_status": getattr(exc, "http_status", None)})

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_attempt(max(1, policy.max_attempts)),
        wait=_Wait(policy),
        before_sleep=before_sleep,
        sleep=throttle.sleep,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                if first is not None:  # replay the first attempt's failure to tenacity
                    failed, first = first, None
                    raise failed
                async with throttle.slot():
                    attempts += 1
                    if on_attempt is not None:
                        on_attempt(attempts)
                    result = await watched()
                throttle.on_success()
                return result, attempts
    except TransportFailure as exc:
        exc.attempts = attempts  # type: ignore[attr-defined]
        breaker.gave_up(exc, answers_before)
        raise
    except BaseException as exc:
        exc.attempts = attempts  # type: ignore[attr-defined]
        raise
    raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover
