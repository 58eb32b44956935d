"""Run metrics for Prometheus' node_exporter textfile collector (`--metrics-file PATH.prom`).

A batch job has no endpoint to scrape: each run writes one small file, atomically (written
beside it, then renamed), at its end, after a clean stop, and when it ends on an error. The
values describe the last run; `corrections_last_success_timestamp_seconds` is carried over
from the previous file when this run did not succeed, so "no success for 26 h" is one alert.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

LAST_SUCCESS = "corrections_last_success_timestamp_seconds"


@dataclass
class RunMetrics:
    """What one run reports; filled in as the run ends, then `write` once."""

    path: Path
    command: str = "apply"
    started: float = field(default_factory=time.time)
    rows: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # target → status → n
    requests: int = 0
    retries: int = 0
    throttled: int = 0

    def write(self, exit_code: int, *, now: float | None = None) -> None:
        """Write the file for a run that ended with `exit_code` (0 = success)."""
        # loaded here: only a run given --metrics-file pays for prometheus_client (~15 ms)
        from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

        now = time.time() if now is None else now
        registry = CollectorRegistry()

        def gauge(name: str, doc: str, value: float) -> None:
            Gauge(name, doc, registry=registry).set(value)

        rows = Gauge("corrections_rows", "Rows by final status and target in the last run.",
                     ["target", "status"], registry=registry)
        for target, counts in self.rows.items():
            for status, n in counts.items():
                rows.labels(target=target, status=status).set(n)
        gauge("corrections_requests", "HTTP requests made by the last run.", self.requests)
        gauge("corrections_retries", "Requests retried by the last run.", self.retries)
        gauge("corrections_throttled", "Throttling answers (429, Retry-After) in the last run.",
              self.throttled)
        gauge("corrections_duration_seconds", "Wall time of the last run.",
              max(0.0, now - self.started))
        gauge("corrections_exit_code", "Exit code of the last run (0 = every row succeeded).",
              exit_code)
        gauge("corrections_last_run_timestamp_seconds", "When the last run ended (Unix time).",
              now)
        last = now if exit_code == 0 else previous_success(self.path)
        if last is not None:
            gauge(LAST_SUCCESS, "When a run last ended with exit code 0 (Unix time).", last)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(self.path), registry)


def previous_success(path: Path) -> float | None:
    """The last-success time in an earlier metrics file, if there is a readable one."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    from prometheus_client.parser import text_string_to_metric_families

    with contextlib.suppress(ValueError, TypeError):
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS:
                    return float(sample.value)
    return None
