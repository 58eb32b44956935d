"""An httpx transport that moves the bytes with aiohttp.

The client keeps httpx's API (requests, responses, `MockTransport` in tests, one exception
tree), but at the concurrency this tool runs, httpx's own connection pool costs about 1-2 ms
of CPU per request (bench/cpu.py); aiohttp's connector does the same work for a fraction of
that, which is what lets a 2-core machine keep the API's politeness limit busy.

Hostile or broken servers are bounded here, for every request of both API clients: the whole
exchange (connection, headers, body) must end within the request's timeout, however slowly a
server drips its bytes; no answer may be longer than `MAX_ANSWER_BYTES` (compressed or not);
and loopback hosts are never reached through a proxy (the token would travel to it in clear).
"""

from __future__ import annotations

import asyncio
import ipaddress
import urllib.request
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiohttp
import httpx
from yarl import URL

from pipeline.answer import Answer

# hop-by-hop or framing headers the two libraries each manage themselves
_DROP_REQUEST = frozenset({"host", "content-length", "transfer-encoding", "connection",
                           "accept-encoding"})
_DROP_RESPONSE = frozenset({"content-encoding", "content-length", "transfer-encoding"})
#: The longest answer read: the API's largest (10 events of at most 10 KB) is ~100 KB.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
_CHUNK = 64 * 1024


class AnswerUnreadable(httpx.ReadError):
    """An answer too large, or compressed in a way that cannot be read within the cap."""


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint as the pool sends to it: URL, headers, timeouts and proxy, made once."""

    url: URL
    headers: Mapping[str, str]
    timeout: aiohttp.ClientTimeout
    deadline: float | None
    proxy: str | None


def is_loopback(host: str) -> bool:
    """`localhost`, `*.localhost` or a loopback address (127.0.0.0/8, ::1)."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Keep-alive pool of at most `limit` connections; TLS verified; proxies from the env."""

    def __init__(self, *, limit: int) -> None:
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], str | None] = {}

    def _proxy(self, url: httpx.URL) -> str | None:
        """The proxy the environment names for this host (HTTPS_PROXY, NO_PROXY, ...); never
        one for loopback, which plain http may reach (a proxy would see the token)."""
        key = (url.scheme, url.host)
        if key not in self._proxies:
            proxy = None if is_loopback(url.host) else urllib.request.getproxies().get(url.scheme)
            if proxy and urllib.request.proxy_bypass(url.host):
                proxy = None
            self._proxies[key] = proxy
        return self._proxies[key]

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=self._limit,
                                             enable_cleanup_closed=False)
            # trust_env would read ~/.netrc in a thread on every request; proxies are looked
            # up once per host instead (`_proxy`)
            # answers are decompressed here, under the size cap (`_decoded`), never by aiohttp
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                                  cookie_jar=aiohttp.DummyCookieJar(),
                                                  auto_decompress=False)
        return self._session

    def route(self, url: httpx.URL, headers: Iterable[tuple[str, str]], *,
              connect: float | None, deadline: float | None) -> Route:
        """What a request to `url` needs, worked out once (the hot path sends many)."""
        sent = {k: v for k, v in headers if k.lower() not in _DROP_REQUEST}
        sent["Accept-Encoding"] = "identity"
        return Route(URL(str(url)), sent, aiohttp.ClientTimeout(total=None, sock_connect=connect),
                     deadline, self._proxy(url))

    async def send(self, method: str, route: Route, content: bytes,
                   request: httpx.Request | None = None) -> Answer:
        """One exchange on the pool, within the route's whole-request deadline and the answer
        cap, never following a redirect; failures raise httpx's exception tree."""
        session = self._open()
        deadline = route.deadline
        try:
            # one deadline for the whole exchange: a server dripping a byte a second cannot
            # hold a request past it (so no per-read timer is armed on top)
            async with asyncio.timeout(deadline), \
                    session.request(method, route.url, headers=route.headers, data=content,
                                    allow_redirects=False, timeout=route.timeout,
                                    proxy=route.proxy) as resp:
                body = await _read_capped(resp, request)
                body = _decoded(body, resp.headers.get("Content-Encoding", ""), request)
                return Answer(resp.status, resp.headers, body, route.url.host or "")
        except TimeoutError:
            raise httpx.ReadTimeout(f"no complete answer within {deadline:g} s"
                                    if deadline else "timed out", request=request) from None
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(type(exc).__name__, request=request) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise httpx.RemoteProtocolError(type(exc).__name__, request=request) from None
        except (aiohttp.ClientError, asyncio.IncompleteReadError, ConnectionError) as exc:
            raise httpx.ReadError(type(exc).__name__, request=request) from None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        route = self.route(request.url, request.headers.items(),
                           connect=timeouts.get("connect"), deadline=timeouts.get("read"))
        answer = await self.send(request.method, route, request.content, request)
        out_headers = [(k, v) for k, v in answer.headers.items()
                       if k.lower() not in _DROP_RESPONSE]
        return httpx.Response(answer.status_code, headers=out_headers, content=answer.content,
                              request=request)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _too_large(request: httpx.Request | None) -> AnswerUnreadable:
    return AnswerUnreadable(f"the answer is larger than {MAX_ANSWER_BYTES // (1024 * 1024)} MB; "
                            "not read (a broken server or proxy?)", request=request)


async def _read_capped(resp: aiohttp.ClientResponse, request: httpx.Request | None) -> bytes:
    """The body, but never more than `MAX_ANSWER_BYTES` of it (the connection is dropped)."""
    if resp.content_length is not None:
        if resp.content_length > MAX_ANSWER_BYTES:
            resp.close()
            raise _too_large(request)
        # a declared length bounds what the parser reads, so one read is enough
        return await resp.read()
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            resp.close()
            raise _too_large(request)
        chunks.append(chunk)
    return b"".join(chunks)


def _decoded(body: bytes, encoding: str, request: httpx.Request | None) -> bytes:
    """A compressed answer (sent although we asked for identity) inflated under the cap."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise AnswerUnreadable(f"the answer is compressed as {encoding[:20]!r}, which is not "
                               "read", request=request)
    # gzip or zlib (auto-detected), then raw deflate, which some servers send as "deflate"
    for wbits in (47, -15):
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(body, MAX_ANSWER_BYTES + 1)
        except zlib.error:
            continue
        if len(out) > MAX_ANSWER_BYTES or inflater.unconsumed_tail:
            raise _too_large(request)
        return out
    raise AnswerUnreadable(f"the {encoding} answer cannot be inflated", request=request)
