"""One exception tree for the pipeline, mapped from httpx and the OS at the boundary.

The command line turns each into an exit code; nothing here ever carries the server token.
"""

from __future__ import annotations


class CorrectionsError(Exception):
    """Base of everything the pipeline raises on purpose."""

    exit_code = 1


class UsageError(CorrectionsError):
    """Bad options, configuration or token format: nothing was sent."""

    exit_code = 2


class SheetError(CorrectionsError):
    """The sheet as a whole cannot be read (not a single bad row): nothing was sent."""

    exit_code = 2


class CheckpointError(CorrectionsError):
    """The checkpoint file is corrupt, of an unknown version, or belongs to another target."""

    exit_code = 2


class LockedError(CorrectionsError):
    """Another run holds the checkpoint's lock."""

    exit_code = 75


class ApiError(CorrectionsError):
    """An answer from the API that is not a success."""

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class AuthError(ApiError):
    """401/403: the token is wrong. Fatal: the run stops and rows stay pending."""

    exit_code = 3


class FatalApiError(ApiError):
    """An answer that means no further request can succeed (e.g. the URL is not the API)."""

    exit_code = 3


class TransientError(ApiError):
    """Worth retrying with the same idempotency key: 5xx, timeouts, cut connections."""


class TransportFailure(TransientError):
    """No answer at all: refused, reset, timed out, DNS or TLS failure (`connect`: the
    connection was never made). A run of them is an outage, not a row's fault."""

    def __init__(self, message: str, *, connect: bool = False) -> None:
        super().__init__(message)
        self.connect = connect


class Unreachable(FatalApiError):
    """The API cannot be reached, or stopped answering: the run stops, rows stay pending."""


class RateLimited(TransientError):
    """429 (or 503 with Retry-After): every worker pauses for `retry_after` seconds."""

    def __init__(
        self, message: str, *, http_status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, http_status=http_status)
        self.retry_after = retry_after


class RetryAfterTooLong(CorrectionsError):
    """The server asked us to wait longer than --max-wait: stop cleanly, rows stay pending."""


class NotFoundError(ApiError):
    """404: the event does not exist (or no longer does)."""


class ConflictError(ApiError):
    """409: the idempotency key was already used with another event. Permanent."""


class RejectedError(ApiError):
    """422 (or another 4xx): the API refuses this payload. Permanent; carries its message."""


class UntrustedAnswer(ApiError):
    """A 2xx answer that cannot be proof of anything: a lookup event that does not match the
    query, a `_timestamp` in an undocumented shape, a field missing. Nothing is sent on it;
    the row ends `failed` (the next run asks again), since the fault is the answer's, not the
    row's."""


class CheckpointWriteError(CorrectionsError):
    """The checkpoint cannot be written (disk full, read-only): the run stops, exit 3.

    Nothing is sent after it: an intent that cannot be committed must not leave, and what
    was applied but not recorded is replayed under the same key by the next run.
    """

    exit_code = 3


class UnexpectedError(CorrectionsError):
    """A fault nobody foresaw inside the run's own machinery: the run stops, exit 3."""

    exit_code = 3
