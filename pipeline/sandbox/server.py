"""Running the sandbox: in a background thread (tests, `--sandbox`), in the foreground (the
`sandbox` command), or as a child process whose URL the parent reads from its first line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from pipeline.sandbox.app import SANDBOX_TOKEN, STATE, make_app
from pipeline.sandbox.faults import FaultInjector, FaultPlan
from pipeline.sandbox.sample import sample_files
from pipeline.sandbox.store import EventStore

__all__ = ["LISTENING_PREFIX", "SANDBOX_TOKEN", "SandboxServer", "run_forever",
           "start_subprocess"]

LISTENING_PREFIX = "sandbox listening on "
#: The directory holding the `pipeline` package (the repository, or site-packages).
_REPO_ROOT = Path(__file__).resolve().parents[2]
#: Seconds a stopping server waits for in-flight requests.
SHUTDOWN_TIMEOUT = 2.0


def _runner(app: web.Application) -> web.AppRunner:
    return web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)


def _url(runner: web.AppRunner) -> str:
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"


def sample_store(propagation_delay: float = 0.0) -> EventStore:
    """A store with the sample events and used keys shipped inside the package."""
    with sample_files() as (events, used):
        return EventStore.from_files(events, used, propagation_delay=propagation_delay)


class SandboxServer:
    """The sandbox on loopback in a background thread with its own event loop.

    >>> with SandboxServer(store) as sandbox:
    ...     httpx.post(sandbox.url + "/v1/event-mutation/lookup", ...)
    """

    def __init__(
        self,
        store: EventStore | None = None,
        *,
        faults: FaultPlan | FaultInjector | None = None,
        tokens: Iterable[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.store = store if store is not None else sample_store()
        self.app = make_app(self.store, faults, tokens)
        self.host, self.port = host, port
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def faults(self) -> FaultInjector:
        return self.app[STATE].faults

    def set_faults(self, **changes: Any) -> FaultPlan:
        """Change fault plan fields (as `POST /_sandbox/faults` does)."""
        plan = self.faults.plan.replace(changes)
        self.faults.plan = plan
        return plan

    def stats(self) -> dict[str, Any]:
        """The same JSON `/_sandbox/stats` returns."""
        return self.app[STATE].stats()

    def reset(self) -> None:
        self.app[STATE].reset()

    def start(self) -> SandboxServer:
        if self._thread is not None:
            raise RuntimeError("sandbox already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def serve() -> None:
            runner = _runner(self.app)
            await runner.setup()
            await web.TCPSite(runner, self.host, self.port).start()
            self._runner = runner
            self.url = _url(runner)

        def main() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(serve())
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name="sandbox-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        thread, loop, runner = self._thread, self._loop, self._runner
        if thread is None or loop is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(
                timeout=SHUTDOWN_TIMEOUT + 5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._thread = self._loop = self._runner = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def run_forever(
    host: str = "127.0.0.1",
    port: int = 8787,
    store: EventStore | None = None,
    faults: FaultPlan | None = None,
    tokens: Iterable[str] | None = None,
) -> None:
    """Serve in the foreground until SIGINT/SIGTERM; first prints `sandbox listening on URL`."""
    app = make_app(store if store is not None else sample_store(), faults, tokens)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        runner = _runner(app)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            print(LISTENING_PREFIX + _url(runner), flush=True)
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())


def start_subprocess(
    args: list[str],
    env: Mapping[str, str] | None = None,
    *,
    timeout: float = 15.0,
) -> tuple[subprocess.Popen[str], str]:
    """Launch `python -m pipeline.sandbox --port 0 ARGS`; return the process and its URL.

    The child's stderr is inherited; its stdout carries only the listening line. The caller
    owns the process: terminate() it and wait() (and close its stdout) when done.
    """
    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_REPO_ROOT), child_env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.sandbox", "--port", "0", *args],
        stdout=subprocess.PIPE, text=True, env=child_env, cwd=_REPO_ROOT,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"sandbox did not start within {timeout:g} s")
                if not sel.select(remaining):
                    continue
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"sandbox exited with code {proc.wait()} before listening")
                if line.startswith(LISTENING_PREFIX):
                    return proc, line[len(LISTENING_PREFIX):].strip()
    except BaseException:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        raise
