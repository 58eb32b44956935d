"""An HTTP answer as the API clients read it: status, case-insensitive headers, whole body.

Why not `httpx.Response`: building one costs more CPU than the rest of a small request's
handling on the client side, and a correction makes two requests. The clients' answer
mapping (`pipeline.targets.usermaven.client`) reads the same four things from either.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class Answer:
    """A complete answer, without httpx's models (the hot path builds two per correction).

    `headers` are the server's, case-insensitive; `content` is the body as read and inflated
    under the cap; `host` is the host the request went to (for messages).
    """

    __slots__ = ("content", "headers", "host", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes,
                 host: str) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content
        self.host = host

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")
