"""What both API clients share on the wire: the URL and token checks, the HTTP client,
Retry-After, transport failures and refused redirects.

Each target's client (Usermaven's `pipeline.targets.usermaven.client`, mParticle's
`pipeline.targets.mparticle.client`) maps its own answers; everything here is the same for
any HTTP API the tool writes to, so it lives once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import SplitResult, urlsplit

import httpx

from pipeline.answer import Answer
from pipeline.errors import FatalApiError, TransientError, TransportFailure, UsageError
from pipeline.transport import AiohttpTransport, AnswerUnreadable, is_loopback

#: an answer as either API client reads it: httpx's, or the aiohttp pool's own
Reply = httpx.Response | Answer


def check_api_url(url: str, option: str = "--api-url") -> str:
    """Refuse plain http except to loopback, so a token never crosses a network in clear; and
    refuse credentials, a query or a fragment in the URL, where logs and proxies would see them.

    Messages show the URL without anything that could be a secret.
    """
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 — raises ValueError on a malformed port
    except ValueError:
        raise UsageError(f"{option} is not a valid URL (e.g. https://api.usermaven.com)") from None
    shown = _shown(parts)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{option} {shown!r} is not an http(s) URL "
                         "(e.g. https://api.usermaven.com)")
    if "@" in parts.netloc:
        raise UsageError(f"{option} must not carry credentials (user:password@ before the host "
                         f"of {shown!r}); credentials go in the environment or a file, never in "
                         "a URL")
    if parts.query or url.strip().endswith("?"):
        raise UsageError(f"{option} must not carry a query (?...) after {shown!r}: a token "
                         "there would be logged by every proxy; credentials go in the "
                         "environment or a file, never in a URL")
    if parts.fragment or "#" in url:
        raise UsageError(f"{option} must not carry a fragment (#...) after {shown!r}")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise UsageError(
            f"{option} {shown!r} uses plain http to a non-loopback host; the token would travel "
            "in clear. Use https://."
        )
    return url.strip().rstrip("/")


def _shown(parts: SplitResult) -> str:
    """scheme://host[:port]/path: nothing of the userinfo, query or fragment."""
    host = parts.netloc.rsplit("@", 1)[-1]
    return "".join(ch if ch.isprintable() else "?" for ch in f"{parts.scheme}://{host}{parts.path}")


def check_token(token: str) -> str:
    """The documented `API_KEY.SERVER_TOKEN` shape; the message never echoes the token."""
    token = token.strip()
    key, dot, secret = token.partition(".")
    if not dot or not key or not secret or any(ch.isspace() for ch in token):
        raise UsageError(
            "the Usermaven token must look like API_KEY.SERVER_TOKEN (two parts joined by a "
            "dot); check USERMAVEN_TOKEN or --token-file"
        )
    return token


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds, from either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def make_http_client(base_url: str, *, concurrency: int, timeout: float,
                     transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """A keep-alive pool sized to the concurrency, with connect/read timeouts."""
    limits = httpx.Limits(max_connections=max(1, concurrency) + 2,
                          max_keepalive_connections=max(1, concurrency) + 2)
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        limits=limits,
        transport=transport or AiohttpTransport(limit=max(1, concurrency) + 2),
        headers={"User-Agent": "corrections/0.1", "Content-Type": "application/json"},
        follow_redirects=False,
    )


@contextmanager
def transport_errors() -> Iterator[None]:
    """httpx's timeouts and broken connections as the pipeline's retryable error.

    The message names only the kind of failure: never a URL, header or body.
    """
    try:
        yield
    except AnswerUnreadable as exc:  # an answer came, but one not worth reading
        raise TransientError(str(exc)) from None
    except httpx.ConnectTimeout as exc:
        raise TransportFailure(f"timed out connecting ({type(exc).__name__})",
                               connect=True) from None
    except httpx.TimeoutException as exc:
        detail = str(exc) if str(exc).startswith("no complete answer") else type(exc).__name__
        raise TransportFailure(f"timed out ({detail})") from None
    except httpx.ConnectError as exc:
        raise TransportFailure(f"connection failed ({exc or type(exc).__name__})",
                               connect=True) from None
    except httpx.TransportError as exc:
        raise TransportFailure(f"connection failed ({type(exc).__name__})") from None


def _host(response: Reply) -> str:
    return response.host if isinstance(response, Answer) else str(response.request.url.host)


def redirect_error(response: Reply, api: str = "") -> FatalApiError:
    """A 3xx is never followed (the credentials would travel to wherever it points).

    The message names the host only: a location's path or query may carry anything.
    """
    location = response.headers.get("Location", "")
    try:
        parts = urlsplit(location)
        host = parts.hostname or (_host(response) if location else "")
        port = parts.port if parts.hostname else None
    except (ValueError, RuntimeError):
        host, port = "", None
    where = f"{host}:{port}" if host and port else host
    where = "".join(ch if ch.isprintable() and ch.isascii() else "?" for ch in where)
    return FatalApiError(
        f"the API answered a redirect to {where or 'an unnamed location'} "
        f"(HTTP {response.status_code}{api}); redirects are never followed, so the "
        "credentials stay here: check the API URL",
        http_status=response.status_code,
    )
