"""The tool against a bare aiohttp client doing the same requests, side by side in one run.

Both sides run as child processes (interpreter start-up, imports and everything up to exit
counted, CPU from `os.wait4` on exactly that child), each against a fresh sandbox in its own
process holding the same events, at 50 ms latency and concurrency 16, alternating
(bare, tool, bare, tool, ...) so that drift in the machine's load hits both alike. Per row
both make one lookup and one mutation with the same bodies; the tool also checkpoints every
intent and outcome and writes the audit report. Median of 3 per side, at 2 000 rows (the
steady state) and at 300 rows (where start-up and the report weigh most).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    apply_argv,
    env_for,
    events_file,
    head_sheet,
    report_counts,
    require_ok,
    run_measured,
    sandbox,
    sheet_file,
    verdict,
    workdir,
)

HERE = Path(__file__).resolve().parent
LATENCY_MS = 50.0
CONCURRENCY = 16
REPEATS = 3
#: rows → the share of the bare client's rows/s the tool must reach
TARGETS = {2000: 0.95, 300: 0.90}


def _bare(sheet: Path, rows: int) -> tuple[float, float]:
    """One bare-client run on a fresh sandbox: (rows/s end to end, CPU-s per 1 000 rows)."""
    with sandbox(events_file(2000), LATENCY_MS) as sb:
        m = run_measured([sys.executable, str(HERE / "bare_client.py"), str(sheet), sb.url,
                          str(CONCURRENCY)], env_for(sb.url))
    require_ok(m)
    out = json.loads(m.stdout.strip().splitlines()[-1])
    if out["applied"] != rows:
        raise SystemExit(f"the bare client applied {out['applied']} of {rows} rows")
    return rows / m.wall, 1000 * m.cpu / rows


def _tool(sheet: Path, rows: int) -> tuple[float, float]:
    """One `corrections apply` on a fresh sandbox: (rows/s end to end, CPU-s per 1 000 rows)."""
    work = workdir(f"vs_bare_{rows}")
    with sandbox(events_file(2000), LATENCY_MS) as sb:
        m = run_measured(apply_argv(sheet, work, "--concurrency", str(CONCURRENCY)),
                         env_for(sb.url))
    require_ok(m)
    counts = report_counts(work / "audit.csv")
    if counts.get("applied") != rows:
        raise SystemExit(f"expected {rows} applied rows, the report says {counts}")
    return rows / m.wall, 1000 * m.cpu / rows


def compare(rows: int) -> None:
    full = sheet_file(2000)
    sheet = full if rows == 2000 else head_sheet(full, rows)
    bare: list[tuple[float, float]] = []
    tool: list[tuple[float, float]] = []
    for _ in range(REPEATS):
        bare.append(_bare(sheet, rows))
        tool.append(_tool(sheet, rows))
    b_rate = statistics.median(r for r, _ in bare)
    t_rate = statistics.median(r for r, _ in tool)
    b_cpu = statistics.median(c for _, c in bare)
    t_cpu = statistics.median(c for _, c in tool)
    ratio = t_rate / b_rate
    print(f"{rows} rows, {LATENCY_MS:g} ms, concurrency {CONCURRENCY}; both sides child "
          f"processes, interpreter start-up included; alternating, median of {REPEATS}:")
    print("  bare aiohttp: " + ", ".join(f"{r:.1f}" for r, _ in bare)
          + f" rows/s → {b_rate:.1f}; CPU {b_cpu:.2f} s per 1 000 rows")
    print("  corrections:  " + ", ".join(f"{r:.1f}" for r, _ in tool)
          + f" rows/s → {t_rate:.1f}; CPU {t_cpu:.2f} s per 1 000 rows")
    target = TARGETS[rows]
    verdict(f"vs bare {rows}", f"{ratio:.3f} of the bare client ({t_rate:.1f}/{b_rate:.1f} "
            f"rows/s; CPU/1 000 {t_cpu:.2f} vs {b_cpu:.2f} s)", f">= {target:.2f}",
            ratio >= target, {"ratio": ratio, "tool_rate": t_rate, "bare_rate": b_rate,
                              "tool_cpu_per_1000": t_cpu, "bare_cpu_per_1000": b_cpu})


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or list(TARGETS)
    unknown = [n for n in sizes if n not in TARGETS]
    if unknown:
        raise SystemExit(f"usage: vs_bare.py [ROWS ...] with ROWS in {sorted(TARGETS)}")
    for rows in sizes:
        compare(rows)


if __name__ == "__main__":
    main()
