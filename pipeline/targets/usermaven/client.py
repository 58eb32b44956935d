"""The Usermaven Event mutations API, one request per call, every answer mapped once.

Retries and pacing live in `pipeline.retry` and `pipeline.throttle`; this module only knows the
wire format. The token travels in the `Authorization` header and nowhere else, so no URL,
exception or log line can carry it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import httpx

from pipeline.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    RateLimited,
    RejectedError,
    TransientError,
    UntrustedAnswer,
)
from pipeline.model import FoundEvent, Window
from pipeline.redact import Redactor
from pipeline.timeutil import TimestampError, format_api, parse_event_time
from pipeline.transport import AiohttpTransport, Route
from pipeline.wire import (  # check_api_url, check_token, …: also reached from here
    Reply,
    redirect_error,
    retry_after_seconds,
    transport_errors,
)

LOOKUP_PATH = "/v1/event-mutation/lookup"
MUTATION_PATH = "/v1/event-mutation"
#: 408 (the server gave up waiting for our request) is as transient as a 5xx
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
REDIRECTS = frozenset({301, 302, 303, 307, 308})

#: one encoder for every body (`json.dumps` with options builds a new one per call)
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
#: a sheet's windows repeat row after row, and strftime is dear: each distinct time is
#: formatted once
_api_time = lru_cache(maxsize=4096)(format_api)


@dataclass(frozen=True)
class MutationResult:
    mutation_id: str
    http_status: int


class UsermavenClient:
    """Calls the two endpoints; raises the pipeline's exceptions for every non-success."""

    def __init__(self, http: httpx.AsyncClient, token: str, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        """`transport`: the client's own transport, to send on it directly.

        A correction costs two small requests, and at the API's politeness limit the
        per-request work of `AsyncClient.send` (redirects, auth, cookies, hooks: none of which
        this API uses) is most of this process's CPU. With the transport given, requests are
        built once per endpoint and handed straight to it; without, `http.post` is used.
        """
        self._http = http
        self._auth = {"Authorization": f"Bearer {token}"}
        self._redact = Redactor.for_token(token)
        self._transport = transport
        headers = httpx.Headers({**dict(http.headers), **self._auth})
        self._headers = list(headers.raw)
        self._urls = {p: http.base_url.join(p) for p in (LOOKUP_PATH, MUTATION_PATH)}
        self._timeout = http.timeout.as_dict()
        # On this tool's own aiohttp pool, httpx's request and response models are skipped
        # too: each endpoint's URL, headers, timeouts and proxy are worked out once here and
        # the pool hands back a bare `Answer`. An injected transport (tests, embedders) keeps
        # the httpx path.
        self._routes: dict[str, Route] = {}
        if isinstance(transport, AiohttpTransport):
            self._routes = {p: transport.route(url, headers.items(),
                                               connect=self._timeout.get("connect"),
                                               deadline=self._timeout.get("read"))
                            for p, url in self._urls.items()}
        self.requests = 0

    @property
    def host(self) -> str:
        """The API's host name, for messages (never the URL's other parts)."""
        return str(self._http.base_url.host) or "the API"

    async def lookup(self, event_type: str, attribute_key: str, attribute_value: str,
                     window: Window) -> tuple[list[FoundEvent], int]:
        """Events matching one attribute value in a window (API: newest first, at most 10).

        Returns the events and the raw count the API answered (before dropping deleted ones),
        so the caller can tell a full page (10) from a complete answer.
        """
        body = {
            "event_type": event_type,
            "attribute_key": attribute_key,
            "attribute_value": attribute_value,
            "from_timestamp": _api_time(window.start),
            "to_timestamp": _api_time(window.end),
        }
        data = await self._post(LOOKUP_PATH, body)
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise TransientError("lookup answer has no 'data' list", http_status=200)
        events = [_found_event(item) for item in items]
        return events, len(items)

    async def mutate(self, event_id: str, timestamp: datetime | str,
                     attributes: Mapping[str, Any], merge_mode: str,
                     idempotency_key: str) -> MutationResult:
        """`timestamp`: a datetime, or text already in the API's form (`format_api`)."""
        body = {
            "event_id": event_id,
            "timestamp": timestamp if isinstance(timestamp, str) else _api_time(timestamp),
            "event_attributes": attributes,
            "merge_mode": merge_mode,
            "idempotency_key": idempotency_key,
        }
        try:
            data = await self._post(MUTATION_PATH, body)
        except NotJson as exc:
            raise TransientError(f"the answer is not proof the mutation was applied: {exc}",
                                 http_status=exc.http_status) from None
        problem = proof_problem(data, event_id)
        if problem:
            raise TransientError(f"the answer is not proof the mutation was applied: {problem}",
                                 http_status=200)
        return MutationResult(mutation_id=str(data["mutation_id"]), http_status=200)

    async def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        content = _encode(body).encode("utf-8")
        self.requests += 1
        with transport_errors():
            route = self._routes.get(path)
            if route is not None:
                assert isinstance(self._transport, AiohttpTransport)
                answer = await self._transport.send("POST", route, content)
                return _interpret(self._redact.answer(answer))
            if self._transport is None:
                response = await self._http.post(path, content=content, headers=self._auth)
            else:
                request = httpx.Request("POST", self._urls[path], headers=self._headers,
                                        content=content, extensions={"timeout": self._timeout})
                response = await self._transport.handle_async_request(request)
                await response.aread()
        return _interpret(self._redact.response(response))


class NotJson(TransientError):
    """A 200 whose body is not JSON (a proxy's page, a truncated answer): retried."""


def proof_problem(data: Any, event_id: str) -> str | None:
    """Why a 200 answer is not the documented proof of a mutation, or None when it is.

    The proof is `{"status": 1, "mutation_id": ..., "event_id": <the event sent>}`: an answer
    naming another event (a replayed key, a confused proxy) proves nothing about this one.
    """
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    if data.get("status") != 1 or isinstance(data.get("status"), bool):
        return f"status is {_short(data.get('status'))}, not 1"
    mutation_id = data.get("mutation_id")
    if not isinstance(mutation_id, str | int) or isinstance(mutation_id, bool) \
            or not str(mutation_id).strip():
        return "no mutation_id"
    answered = data.get("event_id")
    if not isinstance(answered, str) or not answered.strip():
        return "no event_id"
    if answered.strip().lower() != event_id.strip().lower():
        return f"it names event {_short(answered, 80)}, not the event sent ({event_id})"
    return None


def _interpret(response: Reply) -> Any:
    status = response.status_code
    if status == 200:
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise NotJson("the answer (HTTP 200) is not JSON", http_status=status) from None
    if 300 <= status < 400:
        raise redirect_error(response)
    if status < 300:
        raise TransientError(f"unexpected answer {status} (the API answers 200)",
                             http_status=status)
    message = _error_message(response)
    if status in (401, 403):
        raise AuthError(
            f"the API refused the token ({status}: {message}); check USERMAVEN_TOKEN "
            "(API_KEY.SERVER_TOKEN from Settings → Workspace)",
            http_status=status,
        )
    if status == 404:
        raise NotFoundError(message or "event not found", http_status=status)
    if status == 409:
        raise ConflictError(
            message or "idempotency key already used with another event", http_status=status
        )
    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    if status == 429 or (status == 503 and retry_after is not None):
        raise RateLimited(f"throttled ({status})", http_status=status, retry_after=retry_after)
    if status in RETRYABLE_STATUS or status >= 500:
        raise TransientError(f"server error {status}: {message}", http_status=status)
    if 400 <= status < 500:
        raise RejectedError(message or f"refused with {status}", http_status=status)
    raise TransientError(f"unexpected answer {status}", http_status=status)


def _error_message(response: Reply) -> str:
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _short(response.text)
    if isinstance(data, dict):
        for field in ("error", "message", "detail", "errors"):
            if data.get(field):
                return _short(data[field])
    return _short(data)


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


def _found_event(item: Any) -> FoundEvent:
    """One lookup result, or `UntrustedAnswer` when it is not in the documented form."""
    if not isinstance(item, dict) or "event_id" not in item:
        raise UntrustedAnswer(f"lookup result without an event_id: {_short(item)}",
                              http_status=200)
    stamp = item.get("_timestamp")
    try:
        if not isinstance(stamp, str):
            raise TimestampError("not text")
        timestamp = parse_event_time(stamp)
    except TimestampError:
        raise UntrustedAnswer(
            f"lookup result {_short(item.get('event_id'), 60)} has _timestamp "
            f"{_short(stamp, 60)}, not the documented 'YYYY-MM-DD HH:MM:SS'; the answer was "
            "refused and nothing was sent (the next run looks it up again)",
            http_status=200) from None
    attrs = item.get("event_attributes") or {}
    if isinstance(attrs, str):
        try:
            attrs = json.loads(attrs)
        except json.JSONDecodeError:
            attrs = {}
    return FoundEvent(
        event_id=str(item["event_id"]).lower(),
        event_type=str(item.get("event_type", "")),
        attributes=attrs if isinstance(attrs, dict) else {},
        timestamp=timestamp,
        is_deleted=str(item.get("_is_deleted", 0)) in ("1", "true", "True"),
    )
