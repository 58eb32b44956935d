"""The mParticle Events API on the wire: Basic auth, one POST per call, every answer mapped once.

Answers map onto the pipeline's exception tree so `pipeline.retry` paces and retries them like
Usermaven's: 202 → accepted; 400 → `RejectedError` with mParticle's messages; 401/403 →
`AuthError` (the run stops, exit 3); 429 → `RateLimited` (its `Retry-After` pauses every
worker); 503/5xx, timeouts and cut connections → `TransientError`. The key and secret live in
the Authorization header only: no URL, log line, exception or checkpoint ever holds them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from pipeline.errors import (
    AuthError,
    RateLimited,
    RejectedError,
    TransientError,
    UsageError,
)
from pipeline.redact import Redactor
from pipeline.targets.mparticle.limits import PODS
from pipeline.wire import check_api_url, redirect_error, retry_after_seconds, transport_errors

log = logging.getLogger("corrections")

KEY_ENV = "MPARTICLE_API_KEY"
SECRET_ENV = "MPARTICLE_API_SECRET"


@dataclass(frozen=True)
class MParticleTarget:
    """Where batches go and the credentials to send them (held here only, never written)."""

    base_url: str
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    identity: str = ""
    transport: httpx.AsyncBaseTransport | None = field(default=None, repr=False,
                                                        compare=False)

    @property
    def workspace(self) -> str:
        """A stable, non-reversible name for the input: a hash of the API key."""
        return hashlib.sha256(("mparticle:" + self.api_key).encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return self.identity or self.base_url


def base_url(pod: str | None, url: str | None) -> str:
    """The Events API root for a pod name (US1, US2, EU1, AU1) or an explicit URL.

    A URL may be given with or without its `/v2` suffix; plain http only to loopback.
    """
    if url:
        checked = check_api_url(url, "--mparticle-url")
        path = urlsplit(checked).path.rstrip("/")
        return checked[: -len("/v2")] if path.endswith("/v2") else checked
    name = (pod or "US1").upper()
    if name not in PODS:
        raise UsageError(f"--mparticle-pod {pod!r} is not a pod; use one of "
                         f"{', '.join(PODS)} or --mparticle-url")
    return PODS[name]


def check_credentials(api_key: str, api_secret: str) -> tuple[str, str]:
    key, secret = api_key.strip(), api_secret.strip()
    if not key or not secret:
        raise UsageError(f"no mParticle credentials: set {KEY_ENV} and {SECRET_ENV} (the "
                         "server-to-server input's key and secret), or try --sandbox")
    if any(ch.isspace() for ch in key + secret) or ":" in key:
        raise UsageError(f"{KEY_ENV} / {SECRET_ENV} look malformed (whitespace, or ':' in the "
                         "key); copy them again from the mParticle input's settings")
    return key, secret


@dataclass(frozen=True)
class Accepted:
    http_status: int
    errors: tuple[str, ...] = ()


class MParticleClient:
    """POSTs bodies to the Events API; raises the pipeline's exceptions for every non-success."""

    def __init__(self, http: httpx.AsyncClient, target: MParticleTarget) -> None:
        self._http = http
        token = base64.b64encode(f"{target.api_key}:{target.api_secret}".encode()).decode()
        self._auth = {"Authorization": f"Basic {token}"}
        self._redact = Redactor.for_basic(target.api_key, target.api_secret)
        self.requests = 0

    async def post(self, path: str, body: bytes) -> Accepted:
        self.requests += 1
        with transport_errors():
            response = await self._http.post(path, content=body, headers=self._auth)
        return interpret(self._redact.response(response))


def interpret(response: httpx.Response) -> Accepted:
    status = response.status_code
    if status == 202:
        problem = accepted_body_problem(response)
        if problem:
            raise TransientError(f"mParticle's 202 is not its documented answer ({problem}); "
                                 "not proof of acceptance, resent with the same batches",
                                 http_status=status)
        return Accepted(status, tuple(error_messages(response)))
    if 300 <= status < 400:
        raise redirect_error(response, " from mParticle")
    if status < 300:
        raise TransientError(f"mParticle answered {status}, not its documented 202 Accepted; "
                             "not proof of acceptance, resent with the same batches",
                             http_status=status)
    text = "; ".join(error_messages(response))
    if status == 401:
        raise AuthError(f"mParticle refused the request ({status}: authentication missing"
                        f"{': ' + text if text else ''}); check {KEY_ENV} / {SECRET_ENV}",
                        http_status=status)
    if status == 403:
        raise AuthError(f"mParticle refused the credentials ({status}{': ' + text if text else ''})"
                        f"; check {KEY_ENV} / {SECRET_ENV}", http_status=status)
    if status == 429:
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        which = response.headers.get("X-mp-rate-limit-exceeded")
        log.warning("mParticle throttled the request (429, X-mp-rate-limit-exceeded: %s, "
                    "Retry-After: %s)", which or "-", response.headers.get("Retry-After", "-"),
                    extra={"event": "mparticle_throttled", "rate_limit_exceeded": which,
                           "retry_after": retry_after})
        raise RateLimited(f"throttled by mParticle (429, limit {which or 'unnamed'})",
                          http_status=status, retry_after=retry_after)
    if status == 503:
        raise RateLimited(f"mParticle unavailable (503){': ' + text if text else ''}",
                          http_status=status,
                          retry_after=retry_after_seconds(response.headers.get("Retry-After")))
    if status >= 500 or status == 408:
        raise TransientError(f"mParticle answered {status}{': ' + text if text else ''}",
                             http_status=status)
    if 400 <= status < 500:
        raise RejectedError(text or f"refused with {status}", http_status=status)
    raise TransientError(f"unexpected answer {status} from mParticle", http_status=status)


def accepted_body_problem(response: httpx.Response) -> str | None:
    """A 202's body is empty or mParticle's `{"errors": [...]}` object; anything else (an
    HTML page from a proxy, a truncated answer) proves nothing."""
    if not response.content.strip():
        return None
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        kind = response.headers.get("Content-Type", "").split(";")[0].strip() or "unknown"
        return f"a body that is not JSON ({kind[:40]})"
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    if "errors" in data and not isinstance(data["errors"], list | type(None)):
        return "'errors' is not a list"
    return None


def error_messages(response: httpx.Response) -> list[str]:
    """mParticle's `{"errors": [{"code", "message"}]}` as text lines; else the raw body."""
    if not response.content:
        return []
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return [response.text[:300]]
    errors = data.get("errors") if isinstance(data, dict) else None
    if isinstance(errors, list):
        out = []
        for e in errors[:20]:
            if isinstance(e, dict):
                code, message = e.get("code"), e.get("message")
                out.append(f"{code}: {message}" if code else str(message))
            else:
                out.append(str(e))
        return out
    return [] if data in ({}, None, "") else [json.dumps(data, ensure_ascii=False)[:300]]
