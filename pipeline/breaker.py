"""An outage is not a row failure: a breaker over consecutive transport failures.

Every request's outcome passes here. Any answer from the API (success or error status) closes
the streak; a transport failure (refused, reset, timed out, DNS, TLS) extends it. The breaker
trips, stopping the run with rows left `pending` (exit 3), when

- before the API has ever answered, `FIRST_CONTACT` connection failures in a row: the API
  cannot be reached at all ("cannot reach <host>");
- `threshold` transport failures in a row across all requests, `max(2 × concurrency, 10)`
  by default: enough that one blip cutting every request in flight does not trip it;
- one request used up all its attempts on transport failures while no request anywhere
  succeeded: with few workers the streak could otherwise end rows `failed` one by one.
"""

from __future__ import annotations

from pipeline.errors import TransportFailure, Unreachable

FIRST_CONTACT = 3


def default_threshold(concurrency: int) -> int:
    return max(2 * max(1, concurrency), 10)


class Breaker:
    def __init__(self, threshold: int, host: str = "the API") -> None:
        self.threshold = max(1, threshold)
        self.host = host
        self.streak = 0
        self.answers = 0  # answers ever received (of any status)

    def answered(self) -> None:
        self.streak = 0
        self.answers += 1

    def failed(self, exc: TransportFailure) -> None:
        """Count one transport failure; raise `Unreachable` when the breaker trips."""
        self.streak += 1
        if self.answers == 0 and exc.connect and self.streak >= FIRST_CONTACT:
            raise Unreachable(
                f"cannot reach {self.host}: {exc}; rows stay pending. Check the URL, DNS, "
                "TLS and the network, then rerun the same command")
        if self.streak >= self.threshold:
            raise self._stopped_answering(f"{self.streak} requests in a row failed")

    def gave_up(self, exc: TransportFailure, answers_before: int) -> None:
        """A request ran out of attempts on transport failures: an outage if nothing else
        got an answer meanwhile."""
        if self.answers == answers_before:
            raise self._stopped_answering(
                f"every attempt failed and no request got an answer meanwhile (last: {exc})")

    def _stopped_answering(self, why: str) -> Unreachable:
        verb = "cannot reach" if self.answers == 0 else "lost contact with"
        return Unreachable(
            f"{verb} {self.host}: {why}; the API is not answering, so the run stopped and "
            "rows stay pending (not failed). Rerun the same command when it is back")
