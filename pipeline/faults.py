"""How the run names faults of its own storage and of its own code, for a clean stop.

A checkpoint that cannot be written (disk full, read-only file system, I/O error) stops the
run: nothing may be sent whose intent is not durable. Any other exception escaping a row's
work ends that row `failed` (retryable) with the error, so one odd answer never hangs a run.
"""

from __future__ import annotations

import errno
import sqlite3

from pipeline.errors import CheckpointWriteError


def checkpoint_write_error(exc: BaseException) -> CheckpointWriteError | None:
    """`exc` as a checkpoint write failure with a plain reason, or None if it is not one."""
    if isinstance(exc, CheckpointWriteError):
        return exc
    if not isinstance(exc, sqlite3.Error):  # the OS's errors reach us through SQLite
        return None
    text = str(exc).lower()
    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC or "full" in text:
        why = "disk full"
    elif code == errno.EROFS or "readonly" in text or "read-only" in text:
        why = "read-only"
    else:
        why = str(exc) or type(exc).__name__
    return CheckpointWriteError(
        f"cannot write the checkpoint: {why}; the run stopped and sent nothing more. Free "
        "space (or make it writable) and rerun the same command: nothing is applied twice")


def describe(exc: BaseException) -> str:
    """An unexpected exception as one line for a row's `error` column."""
    text = str(exc)
    return f"unexpected error ({type(exc).__name__}{': ' + text if text else ''}); " \
           "retried by the next run"
