"""Row keys and idempotency keys: pure functions of content, never of position or time.

A rerun of the same sheet, on any machine, in any row order, derives the same keys, so the
checkpoint recognises done rows and the API recognises sent mutations.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

KEY_PREFIX = "corr-v1-"
MAX_KEY_LENGTH = 64


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                            allow_nan=False)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal content, equal text."""
    return _ENCODER.encode(value)


def digest(*parts: str) -> str:
    """SHA-256 hex of length-prefixed parts: no two part lists share a digest."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def row_key(content: Mapping[str, Any]) -> str:
    """Key of a row from its normalized content; identical rows share it."""
    return digest("row", canonical_json(content))[:32]


def idempotency_key(namespace: str, event_id: str, attributes: Mapping[str, Any],
                    merge_mode: str) -> str:
    """`corr-v1-<hex>`: the same change to the same event always gets the same key."""
    hexdigest = digest("mutation", namespace, event_id.lower(), canonical_json(attributes),
                       merge_mode)
    return (KEY_PREFIX + hexdigest)[:MAX_KEY_LENGTH]


def per_event_key(explicit: str, event_id: str) -> str:
    """An explicit key made unique to one event, for a sheet key that would span several."""
    suffix = digest("suffix", explicit, event_id.lower())[:12]
    head = explicit[: MAX_KEY_LENGTH - len(suffix) - 1]
    return f"{head}-{suffix}"
