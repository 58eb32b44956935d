"""The pipeline against the naive loop: same sheet, same 50 ms latency.

The naive loop needs ~2 × latency per row, so 2 000 rows would take ~200 s; it runs the first
300 rows of the same sheet instead and the comparison is per row (rows/s against rows/s).
The pipeline runs the full 2 000 rows at `--concurrency 16`, end to end (process start to
exit), median of three runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import verdict
from naive import measure_naive
from throughput import CONCURRENCY, LATENCY_MS, REPEATS, ROWS, median_pipeline

NAIVE_ROWS = 300
TARGET = 12.0


def main() -> None:
    naive = measure_naive(NAIVE_ROWS, LATENCY_MS, ROWS)
    naive_rate = naive["rows"] / naive["seconds"]
    full, rates = median_pipeline(ROWS, LATENCY_MS, CONCURRENCY)
    speedup = full["rate"] / naive_rate
    print(f"latency {LATENCY_MS:g} ms; naive loop: first {NAIVE_ROWS} rows of the sheet in "
          f"{naive['seconds']:.2f} s = {naive_rate:.2f} rows/s")
    print(f"pipeline (--concurrency {CONCURRENCY}): all {ROWS} rows in {full['wall']:.2f} s "
          f"end to end = {full['rate']:.1f} rows/s (median of {REPEATS}: "
          + ", ".join(f"{x:.1f}" for x in rates) + ")")
    print(f"per-row speed-up: {speedup:.1f}× (the naive side ran {NAIVE_ROWS} rows, the "
          f"pipeline {ROWS}; rates compared, not totals)")
    print(f"  at that rate the naive loop would need {ROWS / naive_rate:.0f} s for all {ROWS} "
          f"rows")
    verdict("vs naive", f"{speedup:.1f}× faster per row", f">= {TARGET:g}×",
            speedup >= TARGET, {"speedup": speedup})


if __name__ == "__main__":
    main()
