"""CPU cost: user+sys seconds of the pipeline process per 1 000 corrections.

Zero API latency, so the run is as CPU-bound as it gets; each correction is a lookup, a
mutation, its checkpoint writes and its report line. The sandbox runs in its own process and
is not counted. Default options (`--concurrency 8`), as a user would run it.
For scale, the bare aiohttp client (`bare_client.py`: the same requests, no checkpoint, no
report) runs the same sheet at the same concurrency on a fresh sandbox: the floor of the
network stack on this machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    apply_argv,
    env_for,
    events_file,
    report_counts,
    require_ok,
    run_measured,
    sandbox,
    sheet_file,
    startup_cost,
    verdict,
    workdir,
)

ROWS = 20_000
TARGET = 0.4
CONCURRENCY = 8  # apply's default


def bare_cpu_per_1000(events: Path, sheet: Path) -> float:
    """CPU-s per 1 000 rows of the bare aiohttp client over the same sheet (a child process)."""
    with sandbox(events, 0.0) as sb:
        m = run_measured([sys.executable, str(Path(__file__).resolve().parent / "bare_client.py"),
                          str(sheet), sb.url, str(CONCURRENCY)], env_for(sb.url))
    require_ok(m)
    return m.cpu / (ROWS / 1000)


def main() -> None:
    events, sheet = events_file(ROWS), sheet_file(ROWS)
    work = workdir("cpu")
    with sandbox(events, 0.0) as sb:
        cpu0 = sb.cpu_seconds()
        m = run_measured(apply_argv(sheet, work), env_for(sb.url))
        sandbox_cpu = sb.cpu_seconds() - cpu0
        stats = sb.stats()
    require_ok(m)
    counts = report_counts(work / "audit.csv")
    if counts.get("applied") != ROWS:
        raise SystemExit(f"expected {ROWS} applied rows, the report says {counts}")
    start = startup_cost()
    bare = bare_cpu_per_1000(events, sheet)
    per_k = m.cpu / (ROWS / 1000)
    per_k_net = (m.cpu - start.cpu) / (ROWS / 1000)
    requests = stats["requests"]["lookup"] + stats["requests"]["mutation"]
    print(f"{ROWS} rows at 0 ms: {m.wall:.1f} s wall, pipeline CPU {m.cpu:.2f} s "
          f"(user {m.user:.2f} + sys {m.sys:.2f}), peak RSS {m.maxrss_mb:.0f} MB; "
          f"{requests} requests ({1000 * m.cpu / requests:.2f} ms CPU per request)")
    print(f"  start-up alone: {start.cpu:.2f} s CPU → {per_k_net:.2f} s per 1 000 without it; "
          f"sandbox process used {sandbox_cpu:.2f} s CPU "
          f"({1000 * sandbox_cpu / requests:.2f} ms per request)")
    print(f"  the bare aiohttp client, same requests and concurrency: {bare:.2f} s CPU per 1 000 "
          f"rows (start-up included) → the tool costs {per_k / bare:.2f}× that")
    verdict("cpu", f"{per_k:.2f} s CPU per 1 000 corrections", f"<= {TARGET:g} s",
            per_k <= TARGET, {"cpu_per_1000": per_k, "wall": m.wall, "bare_cpu_per_1000": bare})


if __name__ == "__main__":
    main()
