"""A local Usermaven-compatible Event mutations API, for tests, demos and benchmarks.

`SandboxServer` runs it in a background thread; `corrections sandbox` in the foreground.
"""

from pipeline.sandbox.app import SANDBOX_TOKEN, make_app
from pipeline.sandbox.faults import FaultInjector, FaultPlan
from pipeline.sandbox.loading import load_events
from pipeline.sandbox.server import SandboxServer, run_forever, start_subprocess
from pipeline.sandbox.store import Event, EventStore

__all__ = ["SANDBOX_TOKEN", "Event", "EventStore", "FaultInjector", "FaultPlan",
           "SandboxServer", "load_events", "make_app", "run_forever", "start_subprocess"]
