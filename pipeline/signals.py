"""The signals that stop a run, and noting them from the first instant of the command line.

SIGINT, SIGTERM and SIGHUP (a closed terminal, some schedulers) all mean "stop cleanly":
requests in flight finish, nothing new leaves, the report is written, exit 130/143/129.
A signal is noted, never raised, from the moment `python -m pipeline` (or `corrections`)
starts until the report is renamed into place, so no signal can kill the run half-way and
leave a temporary file behind. Library callers get none of this unless they ask.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import PurePath
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}

#: signals that arrived while the command line was starting (see `note_early`)
_early: list[int] = []
_early_installed: dict[int, object] = {}


def exit_code(signum: int) -> int:
    return SIGNAL_EXIT.get(signal.Signals(signum), 128 + int(signum))


def _note(signum: int, _frame: FrameType | None) -> None:
    _early.append(signum)


def note_early() -> None:
    """Note stop signals from now on (the command line calls this before its imports)."""
    for sig in STOP_SIGNALS:
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            _early_installed[sig] = signal.signal(sig, _note)


def note_early_for_cli() -> None:
    """`note_early` when this process is the command line (`corrections ...` or `python -m
    pipeline ...`), called by the package before its heavy imports; a library user's
    process is left alone."""
    argv = getattr(sys, "orig_argv", [])
    script = PurePath(argv[1]).name if len(argv) > 1 else ""
    if argv[1:3] == ["-m", "pipeline"] or script in ("corrections", "corrections.exe"):
        note_early()


def noted() -> list[int]:
    """Signals noted since `note_early`, oldest first."""
    return list(_early)


def release_early() -> None:
    """For commands that do not run a job: the usual signal behaviour again, and a signal
    that arrived meanwhile takes effect now."""
    for sig, previous in _early_installed.items():
        with contextlib.suppress(ValueError, OSError, TypeError):
            signal.signal(sig, previous)  # type: ignore[arg-type]
    _early_installed.clear()
    if _early:
        os.kill(os.getpid(), _early[0])


@contextlib.contextmanager
def signals_noted(into: list[int], enabled: bool) -> Iterator[None]:
    """Outside the event loop, stop signals are noted in `into` (not raised), so a run stops
    cleanly and its report is always renamed into place whole."""
    if not enabled:
        yield
        return
    previous = {}
    for sig in STOP_SIGNALS:
        with contextlib.suppress(ValueError):  # not the main thread: nothing to install
            previous[sig] = signal.signal(sig, lambda signum, _frame: into.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def on_loop(loop: asyncio.AbstractEventLoop, handler: Callable[[int], None],
            enabled: bool) -> Iterator[None]:
    """Stop signals call `handler(signum)` inside the event loop; afterwards the handlers
    that were there before (the noting ones) are back, not the default that kills."""
    installed: dict[signal.Signals, Any] = {}
    if enabled:
        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                before = signal.getsignal(sig)
                loop.add_signal_handler(sig, handler, int(sig))
                installed[sig] = before
    try:
        yield
    finally:
        for sig, before in installed.items():
            loop.remove_signal_handler(sig)
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, before)
