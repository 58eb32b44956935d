"""Deliberately broken HTTP servers on loopback (stdlib only), for the hostile-server tests.

Each server runs a `respond(exchange)` function per request in its own thread; the exchange
carries what the client sent and writes whatever bytes the test wants back — wrong bodies,
redirects, echoed headers, a status line dripped a byte a second, a body of hundreds of MB.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "um_test_key.s3cr3t-server-token-0123456789"
MP_KEY = "mp-key-7c1d2e"
MP_SECRET = "mp-secret-9f8e7d6c5b"


@dataclass
class Exchange:
    """One request as received, and the means to answer it."""

    handler: BaseHTTPRequestHandler
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    stop: threading.Event  # set when the server shuts down

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def reply(self, status: int, body: bytes | str | Any = b"", *,
              headers: dict[str, str] | None = None) -> None:
        """A complete answer with Content-Length (JSON-encodes anything not bytes/str)."""
        if not isinstance(body, bytes | str):
            body = json.dumps(body)
            headers = {"Content-Type": "application/json", **(headers or {})}
        raw = body.encode() if isinstance(body, str) else body
        self.handler.send_response(status)
        for k, v in (headers or {}).items():
            self.handler.send_header(k, v)
        self.handler.send_header("Content-Length", str(len(raw)))
        self.handler.send_header("Connection", "close")
        self.handler.end_headers()
        self.write(raw)

    def write(self, raw: bytes) -> bool:
        """Raw bytes to the socket; False once the client has gone."""
        try:
            self.handler.wfile.write(raw)
            self.handler.wfile.flush()
            return True
        except OSError:
            return False

    def drip(self, raw: bytes, every: float = 1.0) -> None:
        """`raw` one byte at a time, one byte per `every` seconds, until done, cut or shut."""
        for i in range(len(raw)):
            if not self.write(raw[i:i + 1]) or self.stop.wait(every):
                return


@dataclass
class Hostile:
    """A running server: its URL, and every exchange it saw."""

    url: str
    respond: Callable[[Exchange], None]
    seen: list[Exchange] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def host(self) -> str:
        return self.url.split("//", 1)[1]


@contextmanager
def hostile_server(respond: Callable[[Exchange], None]) -> Iterator[Hostile]:
    """Serve `respond` on 127.0.0.1 (a free port) in threads; shut down afterwards.

    `respond` can be swapped while serving (`server.respond = ...`), e.g. to let a rerun
    against the same URL succeed.
    """
    box: list[Hostile] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep the test output clean
            pass

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            ex = Exchange(self, self.command, self.path, headers, body, box[0].stop)
            box[0].seen.append(ex)
            with suppress(OSError):
                box[0].respond(ex)
            self.close_connection = True

        do_GET = do_POST = do_PUT = do_CONNECT = _any

    class Server(ThreadingHTTPServer):
        request_queue_size = 256
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    port = server.server_address[1]
    box.append(Hostile(f"http://127.0.0.1:{port}", respond))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield box[0]
    finally:
        box[0].stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def mutation_ok(ex: Exchange, **override: Any) -> None:
    """The documented success answer for the mutation that was sent (fields overridable)."""
    sent = ex.json() or {}
    body = {"status": 1, "mutation_id": f"mut-{sent.get('idempotency_key', '')[-12:]}",
            "event_id": sent.get("event_id"), **override}
    ex.reply(200, {k: v for k, v in body.items() if v is not None})
