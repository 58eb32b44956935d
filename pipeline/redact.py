"""Credentials scrubbed from whatever a server answers, before anything reads the answer.

A server (or a proxy in front of it) may echo the request's headers in its body: a 422 that
quotes the request, a debug page, a lookup that stores them in an event. Every answer both API
clients receive passes through `Redactor.response` first, so no exception message, log line,
checkpoint row or report cell built from an answer can hold a credential in any of its forms.
Also here: `url_for_display`, which keeps `user:pass@` out of any URL shown or stored.
"""

from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit, urlunsplit

from pipeline.answer import Answer

if TYPE_CHECKING:  # loaded where an answer is rebuilt: log and display code stay light
    import httpx

MARK = "[redacted]"
#: shorter fragments are not scrubbed on their own (they would blank ordinary words); the
#: whole credential they belong to still is
_MIN_LENGTH = 6


class Redactor:
    """Replaces each form of the given credentials with `[redacted]`, longest form first."""

    def __init__(self, forms: set[str]) -> None:
        wide = set()
        for form in forms:
            if len(form) >= _MIN_LENGTH:
                wide |= {form, quote(form, safe=""), form.replace("/", "\\/")}
        self._forms = sorted(wide, key=len, reverse=True)
        self._raw = [(f.encode(), MARK.encode()) for f in self._forms]

    @classmethod
    def for_token(cls, token: str) -> Redactor:
        """Usermaven's `API_KEY.SERVER_TOKEN`: the whole token and each of its parts."""
        key, _, secret = token.partition(".")
        return cls({token, key, secret})

    @classmethod
    def for_basic(cls, key: str, secret: str) -> Redactor:
        """mParticle's Basic credentials: key, secret, `key:secret` and its base64 form."""
        pair = f"{key}:{secret}"
        encoded = base64.b64encode(pair.encode()).decode()
        return cls({key, secret, pair, encoded, encoded.rstrip("=")})

    def text(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, MARK)
        return text

    def data(self, raw: bytes) -> bytes:
        for form, mark in self._raw:
            if form in raw:
                raw = raw.replace(form, mark)
        return raw

    def response(self, response: httpx.Response) -> httpx.Response:
        """The same answer with every credential form scrubbed from its body and headers."""
        body = response.content
        clean = self.data(body)
        raw = response.headers.raw
        # the common case, cheaply: nothing to scrub anywhere, the answer is passed on as is
        if clean is body and not any(form in value for _, value in raw
                                     for form, _ in self._raw):
            return response
        import httpx

        headers = [(k, self.text(v)) for k, v in response.headers.items()
                   if k.lower() != "content-length"]
        return httpx.Response(response.status_code, headers=headers, content=clean,
                              request=response.request)

    def answer(self, answer: Answer) -> Answer:
        """`response` for the transport's own answers (the hot path skips httpx's models)."""
        body = answer.content
        clean = self.data(body)
        if clean is body and not any(form in value for value in answer.headers.values()
                                     for form in self._forms):
            return answer
        import httpx

        headers = httpx.Headers([(k, self.text(v)) for k, v in answer.headers.items()
                                 if k.lower() != "content-length"])
        return Answer(answer.status_code, headers, clean, answer.host)


_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@?#]+@")


def scrub_urls(text: str) -> str:
    """Every `scheme://user:password@` in `text` as `scheme://***@` (a last guard on output)."""
    return _URL_USERINFO.sub(r"\1***@", text) if "@" in text else text


def url_credentials(url: str) -> Redactor:
    """A redactor for the `user:password` a URL carries (e.g. `s3://KEY:SECRET@bucket/...`),
    for messages from libraries that may quote the URL or its parts."""
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        return Redactor(set())
    forms = {f for f in (user, password) if f}
    if user and password:
        forms.add(f"{user}:{password}")
    return Redactor(forms)


def url_for_display(url: str) -> str:
    """`url` without its `user:password@` part (kept as `***@`), for logs, reports, messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("@", 1)[-1] if "@" in url else url
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))
