"""The primary target: Usermaven's Event mutations API, behind the `Target` protocol.

It finds each event (`resolve`: lookups, full pages split), decides and sends its mutation
(`runner`, on the one engine; `client` maps the API's answers) and records both in the
checkpoint's rows and mutations tables; the other targets deliver after it, from what it
found. `refresh` reads an event by id (plans), `verify` reads applied events back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pipeline import signals
from pipeline.checkpoint import Checkpoint, workspace_id
from pipeline.model import SUCCESS, Status
from pipeline.run_types import Delivered, RunResult
from pipeline.target import RunContext
from pipeline.targets.usermaven.client import UsermavenClient
from pipeline.targets.usermaven.runner import Runner
from pipeline.transport import AiohttpTransport
from pipeline.wire import make_http_client


class Usermaven:
    name = "usermaven"
    needs_users = False

    def identity(self, setup: Any) -> dict[str, Any]:
        return {"url": setup.identity or setup.api_url, "workspace": workspace_id(setup.token)}

    def plan_options(self, setup: Any) -> dict[str, Any] | None:
        return None

    def for_plan(self, identity: dict[str, Any], options: dict[str, Any] | None,
                 setup: Any) -> Any:
        from pipeline.planfile import PlanError  # plans only: not loaded by every run

        mine = self.identity(setup)
        if identity.get("url") != mine["url"]:
            raise PlanError(f"the plan was made against {identity.get('url')}, not "
                            f"{mine['url']}; apply it to the API it was reviewed for, or make "
                            "a new plan")
        if identity.get("workspace") and identity["workspace"] != mine["workspace"]:
            raise PlanError("the plan was made for another workspace (another API key); use "
                            "the token of the workspace it was reviewed for, or make a new "
                            "plan")
        return setup

    def bind(self, cp: Checkpoint, setup: Any) -> None:
        cp.bind_target(setup.identity or setup.api_url, workspace_id(setup.token))

    def describe(self, setup: Any) -> dict[str, Any] | None:
        return None  # the API URL is in the checkpoint's meta and the run's log line

    def deliver(self, run: RunContext, setup: Any) -> Delivered:
        return asyncio.run(self._deliver(run, setup))

    async def _deliver(self, run: RunContext, setup: Any) -> RunResult:
        opts = run.options
        wire = setup.transport or AiohttpTransport(limit=opts.concurrency + 2)
        http = make_http_client(setup.api_url, concurrency=opts.concurrency,
                                timeout=opts.timeout, transport=wire)
        async with http:
            client = UsermavenClient(http, setup.token, transport=wire)
            runner = Runner(run.cp, client, opts, run_id=run.run_id,
                            generation=run.generation, on_row=run.on_row,
                            progress=run.progress)
            if run.names_explicit_keys:
                runner.decider.explicit_keys.learn(run.batches())  # order-independent keys
            with signals.on_loop(asyncio.get_running_loop(), runner.request_stop,
                                 run.install_signals):
                if run.early:
                    runner.request_stop(run.early[0])
                return await runner.run(run.batches())

    def checkpoint_identity(self, cp: Checkpoint) -> dict[str, Any] | None:
        return {"url": cp.meta("api_url"), "workspace": cp.meta("workspace")}

    def undo_recipients(self, cp: Checkpoint, runs: Sequence[str]) -> list[Any]:
        return []  # a revert is a guarded `replace` with the earlier state: no recipients

    def summary(self, result: Delivered) -> dict[str, Any]:
        return {}  # the summary's main lines are the primary target's

    def summary_lines(self, result: Delivered, run_stop: str | None) -> list[str]:
        return []

    def read_back(self, checkpoint: Path, setup: Any, *, wait: float, concurrency: int,
                  timeout: float, transport: Any = None) -> Any:
        from pipeline.targets.usermaven.verify import verify

        return verify(checkpoint, setup.api_url, setup.token, wait=wait,
                      concurrency=concurrency, timeout=timeout, transport=transport)

    def not_sent(self, why: str) -> Delivered:
        return RunResult(skipped=why)

    def offline_options(self, setup: Any) -> Any:
        return None

    def present(self, cp: Checkpoint) -> bool:
        return True

    def row_counts(self, cp: Checkpoint, generation: int) -> dict[str, int]:
        return cp.status_counts(generation)

    def rows_left(self, counts: dict[str, int]) -> int:
        return sum(n for s, n in counts.items()
                   if Status(s) not in SUCCESS and Status(s) is not Status.PLANNED)

    def report_lines(self, cp: Checkpoint, generation: int) -> Iterator[dict[str, Any]]:
        return ({**line, "target": self.name} for line in cp.report_rows(generation))

    def trailing_lines(self, cp: Checkpoint, generation: int) -> Iterator[dict[str, Any]]:
        return ({**line, "target": self.name} for line in cp.gone_rows(generation))


TARGET = Usermaven()
