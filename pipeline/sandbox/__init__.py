"""A local Usermaven-compatible Event mutations API, for tests, demos and benchmarks.

`SandboxServer` runs it in a background thread; `corrections sandbox` in the foreground.

The names below load on first use: the command line lists `corrections sandbox` (and reads
its help) without importing the emulator's server stack (aiohttp.web, the event store).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: The token the emulator always accepts (`API_KEY.SERVER_TOKEN` shaped, like a real one).
SANDBOX_TOKEN = "sandbox-key.sandbox-server-token"

_WHERE = {"make_app": "app", "FaultInjector": "faults", "FaultPlan": "faults",
          "load_events": "loading", "SandboxServer": "server", "run_forever": "server",
          "start_subprocess": "server", "Event": "store", "EventStore": "store"}

__all__ = ["SANDBOX_TOKEN", "Event", "EventStore", "FaultInjector", "FaultPlan",
           "SandboxServer", "load_events", "make_app", "run_forever", "start_subprocess"]

if TYPE_CHECKING:
    from pipeline.sandbox.app import make_app
    from pipeline.sandbox.faults import FaultInjector, FaultPlan
    from pipeline.sandbox.loading import load_events
    from pipeline.sandbox.server import SandboxServer, run_forever, start_subprocess
    from pipeline.sandbox.store import Event, EventStore


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"pipeline.sandbox.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'pipeline.sandbox' has no attribute {name!r}")
