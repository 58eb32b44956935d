"""An httpx transport that moves the bytes with aiohttp.

The client keeps httpx's API (requests, responses, `MockTransport` in tests, one exception
tree), but at the concurrency this tool runs, httpx's own connection pool costs about 1-2 ms
of CPU per request (bench/cpu.py); aiohttp's connector does the same work for a fraction of
that, which is what lets a 2-core machine keep the API's politeness limit busy.
"""

from __future__ import annotations

import asyncio
import urllib.request

import aiohttp
import httpx

# hop-by-hop or framing headers the two libraries each manage themselves
_DROP_REQUEST = frozenset({"host", "content-length", "transfer-encoding", "connection",
                           "accept-encoding"})
_DROP_RESPONSE = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Keep-alive pool of at most `limit` connections; TLS verified; proxies from the env."""

    def __init__(self, *, limit: int) -> None:
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], str | None] = {}

    def _proxy(self, url: httpx.URL) -> str | None:
        """The proxy the environment names for this host (HTTPS_PROXY, NO_PROXY, ...)."""
        key = (url.scheme, url.host)
        if key not in self._proxies:
            proxy = urllib.request.getproxies().get(url.scheme)
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
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._open()
        timeouts = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeouts.get("connect"),
                                        sock_read=timeouts.get("read"))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
        try:
            async with session.request(request.method, str(request.url), headers=headers,
                                       data=request.content, allow_redirects=False,
                                       timeout=timeout, proxy=self._proxy(request.url)) as resp:
                body = await resp.read()
                out_headers = [(k, v) for k, v in resp.headers.items()
                               if k.lower() not in _DROP_RESPONSE]
                return httpx.Response(resp.status, headers=out_headers, content=body,
                                      request=request)
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from None
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(type(exc).__name__, request=request) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise httpx.RemoteProtocolError(type(exc).__name__, request=request) from None
        except (aiohttp.ClientError, asyncio.IncompleteReadError, ConnectionError) as exc:
            raise httpx.ReadError(type(exc).__name__, request=request) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
