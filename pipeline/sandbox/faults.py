"""Seeded, reproducible fault injection for the sandbox.

A decision depends only on (seed, endpoint, SHA-256 of the request body, how many times this
exact body was seen before) — never on arrival order or wall time — so a test that sends the
same requests gets the same faults however its workers interleave, and a retry of the same body
gets a fresh draw.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

#: Fault kinds, in the order their rates are stacked on the [0, 1) draw.
KINDS = ("429", "500", "503", "cut", "apply_then_cut")
_RATE_FIELDS = {"429": "rate_429", "500": "rate_500", "503": "rate_503", "cut": "rate_cut",
                "apply_then_cut": "rate_apply_then_cut"}


@dataclass(frozen=True)
class FaultPlan:
    """What to inject. Rates are probabilities per request; their sum must be at most 1.

    `cut` closes the connection before processing (nothing applied); `apply_then_cut` processes
    and commits the request, then closes the connection without answering.
    """

    seed: int = 0
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    rate_429: float = 0.0
    retry_after: int = 1
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_cut: float = 0.0
    rate_apply_then_cut: float = 0.0

    def __post_init__(self) -> None:
        total = 0.0
        for name in _RATE_FIELDS.values():
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {rate}")
            total += rate
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to {total:g}, more than 1")
        if self.latency_ms < 0 or self.latency_jitter_ms < 0:
            raise ValueError("latency must not be negative")
        if self.retry_after < 0:
            raise ValueError("retry_after must not be negative")

    def replace(self, changes: dict[str, Any]) -> FaultPlan:
        """A copy with the given fields changed; unknown names or wrong types raise ValueError."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        clean: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in fields:
                raise ValueError(f"unknown fault field {name!r}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            if name in ("seed", "retry_after"):
                if value != int(value):
                    raise ValueError(f"{name} must be an integer")
                value = int(value)
            clean[name] = value
        return dataclasses.replace(self, **clean)

    @property
    def active(self) -> bool:
        return bool(self.latency_ms or self.latency_jitter_ms
                    or any(getattr(self, f) for f in _RATE_FIELDS.values()))


@dataclass(frozen=True, slots=True)
class Decision:
    """For one request: the fault (or None) and the added latency in seconds."""

    kind: str | None
    delay: float


class FaultInjector:
    """Holds the current plan, the per-body sighting counts and counters of injected faults."""

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self.plan = plan or FaultPlan()
        self._lock = threading.Lock()
        # (endpoint, body digest) -> sightings; 16 digest bytes keep a long run's memory small.
        self._seen: Counter[tuple[str, bytes]] = Counter()
        self.counts: Counter[str] = Counter()

    def decide(self, endpoint: str, body: bytes) -> Decision:
        """The reproducible decision for this request (and count it)."""
        plan = self.plan
        if not plan.active:
            return Decision(None, 0.0)
        body_sha = hashlib.sha256(body).digest()
        seen_key = (endpoint, body_sha[:16])
        with self._lock:
            nth = self._seen[seen_key]
            self._seen[seen_key] = nth + 1
        h = hashlib.sha256(
            b"%d|%s|%s|%d" % (plan.seed, endpoint.encode(), body_sha.hex().encode(), nth)
        ).digest()
        draw = int.from_bytes(h[:8], "big") / 2**64
        jitter = int.from_bytes(h[8:16], "big") / 2**64
        kind: str | None = None
        edge = 0.0
        for name in KINDS:
            edge += getattr(plan, _RATE_FIELDS[name])
            if draw < edge:
                kind = name
                break
        delay = (plan.latency_ms + jitter * plan.latency_jitter_ms) / 1000.0
        with self._lock:
            if delay > 0:
                self.counts["latency"] += 1
            if kind is not None:
                self.counts[kind] += 1
        return Decision(kind, delay)

    def reset(self) -> None:
        """Forget sightings and counters (the plan stays)."""
        with self._lock:
            self._seen.clear()
            self.counts.clear()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)
