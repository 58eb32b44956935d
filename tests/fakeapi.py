"""A scripted HTTP/1.1 server on loopback, for the broken servers the sandbox does not play.

It speaks just enough HTTP (request line, headers, Content-Length body, keep-alive) to serve
the pipeline's clients, records when each request arrived, and answers through a handler:
a (status, JSON body) pair, `HANG` (read the request, never answer) or `RESET` (drop the
connection). It runs on its own event loop in a thread, so a test can drive a subprocess
against it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

HANG = "hang"
RESET = "reset"
Reply = tuple[int, Any] | str
Handler = Callable[[str, Any], Reply | Awaitable[Reply]]


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() when the request's body was read
    path: str
    body: Any


class FakeApi:
    """`with FakeApi(handler) as api: ... api.url ... api.received`"""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.received: list[Received] = []
        self.url = ""
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, daemon=True, name="fake-api")
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing: asyncio.Event | None = None

    # -- what a test reads --------------------------------------------------------------

    def count(self, path_part: str = "", after: float | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.received
                       if path_part in r.path and (after is None or r.at > after))

    # -- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> FakeApi:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake API did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        fut.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._closing = asyncio.Event()
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _shutdown(self) -> None:
        assert self._server is not None and self._closing is not None
        self._closing.set()
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # a waiting read ends; no task is cancelled
        await asyncio.gather(*self._conns, return_exceptions=True)
        await self._server.wait_closed()

    # -- HTTP -----------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None and self._closing is not None
        self._conns.add(task)
        self._writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line.strip():
                    return
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                size = int(headers.get("content-length", "0"))
                raw = await reader.readexactly(size) if size else b""
                path = line.split()[1].decode("latin-1")
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                with self._lock:
                    self.received.append(Received(time.monotonic(), path, body))
                reply = self.handler(path, body)
                if inspect.isawaitable(reply):
                    reply = await reply
                if reply == HANG:
                    await self._closing.wait()
                    return
                if reply == RESET:
                    writer.transport.abort()
                    return
                assert isinstance(reply, tuple)
                status, payload = reply
                data = json.dumps(payload).encode()
                writer.write(f"HTTP/1.1 {status} Answer\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._conns.discard(task)
            self._writers.discard(writer)
            writer.close()


# -- handlers of a working API --------------------------------------------------------------

EVENT_TIME = "2026-09-15 10:00:00"


def event_id_for(value: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-event/{value}"))


def working(path: str, body: Any) -> Reply:
    """A Usermaven API that finds one live event per lookup value and applies everything."""
    if path.startswith("/v1/event-mutation/lookup"):
        value = body["attribute_value"]
        return 200, {"data": [{
            "event_id": event_id_for(value), "event_type": body["event_type"],
            "_timestamp": EVENT_TIME, "_is_deleted": 0,
            "event_attributes": {body["attribute_key"]: value, "price": "1.00"},
        }], "status": 1}
    if path.startswith("/v1/event-mutation"):
        return 200, {"status": 1, "mutation_id": "m-" + body["idempotency_key"][-12:],
                     "event_id": body["event_id"]}
    return 404, {"error": "no such path"}


def slow(handler: Handler, seconds: float) -> Handler:
    """The same answers, each after `seconds`."""
    async def answer(path: str, body: Any) -> Reply:
        await asyncio.sleep(seconds)
        reply = handler(path, body)
        return await reply if inspect.isawaitable(reply) else reply
    return answer


def always(status: int, payload: Any, seconds: float = 0.0) -> Handler:
    """Every request answered `status` with `payload` (after `seconds`)."""
    return slow(lambda _p, _b: (status, payload), seconds)


def order_rows(n: int, start: int = 1) -> list[dict[str, str]]:
    """`n` lookup rows, one distinct order each, all in the fake's month."""
    return [{"event_type": "order_completed", "lookup_key": "order_id",
             "lookup_value": f"ORD-{i:05d}", "event_time": "2026-09",
             "set.price": f"{i}.99"} for i in range(start, start + n)]
