"""Helpers for tests that need events of their own: a sandbox loaded with crafted events, and a
small stdlib HTTP server on loopback for answers the sandbox would never give."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pipeline.jobs import ApplyOutcome, SheetJob, Target, apply_sheet, plan_sheet
from pipeline.model import SheetDefaults
from pipeline.run_types import RunOptions
from pipeline.sandbox.server import SANDBOX_TOKEN, SandboxServer
from pipeline.sandbox.store import Event, EventStore

FAST = {"backoff_base": 0.001, "backoff_max": 0.01}
BASE = datetime(2026, 3, 20, 12, 0, 0, tzinfo=UTC)


def eid(n: int, group: int = 0) -> str:
    """A readable, deterministic event id."""
    return str(uuid.UUID(int=(group << 64) | n))


def event(n: int, attrs: Mapping[str, Any], *, minutes_ago: float = 0, deleted: bool = False,
          event_type: str = "order_completed", group: int = 0,
          at: datetime | None = None) -> Event:
    """An event `minutes_ago` before BASE (or at `at`)."""
    ts = at if at is not None else BASE - timedelta(minutes=minutes_ago)
    a = dict(attrs)
    return Event(eid(n, group), event_type, ts, deleted, a, a)


@contextmanager
def crafted_sandbox(events: Sequence[Event]) -> Iterator[SandboxServer]:
    """The sandbox on a real loopback port, holding exactly `events`."""
    with SandboxServer(EventStore(events)) as server:
        yield server


def order_row(order: str, price: str = "9.99", **extra: str) -> dict[str, str]:
    return {"event_type": "order_completed", "lookup_key": "order_id", "lookup_value": order,
            "event_time": "2026-03", "set.final_price": price, **extra}


def run_apply(url: str, sheet: Path, tmp_path: Path, *, checkpoint: str = "cp.sqlite",
              report: str = "audit.csv", **options: Any) -> ApplyOutcome:
    target = Target(url, SANDBOX_TOKEN, url)
    return apply_sheet(SheetJob(sheet, SheetDefaults()), target,
                       RunOptions(**{**FAST, **options}), checkpoint=tmp_path / checkpoint,
                       report=tmp_path / report, install_signals=False)


def run_plan(url: str, sheet: Path, tmp_path: Path, *, report: str = "plan.csv",
             **options: Any) -> ApplyOutcome:
    target = Target(url, SANDBOX_TOKEN, url)
    return plan_sheet(SheetJob(sheet, SheetDefaults()), target,
                      RunOptions(**{**FAST, **options}), report=tmp_path / report)


Answer = Callable[[str, dict[str, Any]], tuple[int, Any]]


class JsonServer:
    """A stdlib HTTP server on loopback that answers POSTs with `answer(path, body)`.

    Records every request body (`requests`), so a test can count lookups and see whether any
    mutation was sent.
    """

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                path = self.path.split("?", 1)[0]
                with outer._lock:
                    outer.requests.append((path, body))
                status, data = outer.answer(path, body)
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> JsonServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def count(self, path_end: str) -> int:
        with self._lock:
            return sum(1 for p, _ in self.requests if p.endswith(path_end))

    @property
    def mutations(self) -> int:
        return self.count("/v1/event-mutation")


def mutation_ok(body: Mapping[str, Any]) -> tuple[int, Any]:
    return 200, {"status": 1, "mutation_id": str(uuid.uuid4()), "event_id": body["event_id"]}
