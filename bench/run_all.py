"""Run every bench, each in its own process, and print one results table.

Each bench prints a `BENCH-RESULT {json}` line; this collects them. A bench that crashes is a
FAIL row with its exit code, not a missing row. Results also go to bench/out/results.json.
Usage: python bench/run_all.py [NAME ...]   (names: throughput naive vs_naive vs_bare cpu memory
resume economy plans startup; default all)
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import OUT, RESULT_PREFIX  # noqa: E402

BENCHES = ("throughput", "naive", "vs_naive", "vs_bare", "cpu", "memory", "resume", "economy",
           "plans", "startup")


def run_one(name: str) -> list[dict[str, object]]:
    """Run bench/<name>.py, echo its output live, return its result lines."""
    print(f"\n=== {name} ===", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(HERE / f"{name}.py")], stdout=subprocess.PIPE,
                            text=True, cwd=HERE.parent)
    assert proc.stdout is not None
    results: list[dict[str, object]] = []
    for line in proc.stdout:
        if line.startswith(RESULT_PREFIX):
            results.append(json.loads(line[len(RESULT_PREFIX):]))
        else:
            print(line, end="", flush=True)
    code = proc.wait()
    took = time.perf_counter() - t0
    if code != 0 or not results:
        results.append({"name": name, "figure": f"crashed (exit {code})", "target": "-",
                        "result": "FAIL"})
    for r in results:
        r["seconds"] = round(took, 1)
    return results


def table(results: list[dict[str, object]]) -> str:
    rows = [("bench", "figure", "target", "result", "took")]
    rows += [(str(r["name"]), str(r["figure"]), str(r["target"]), str(r["result"]),
              f"{r['seconds']} s") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    names = sys.argv[1:] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown bench(es): {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
        return 2
    results: list[dict[str, object]] = []
    load_before = os.getloadavg()[0]
    for name in names:
        results.extend(run_one(name))
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    # Other work on the machine skews CPU-bound figures; say how busy it was.
    load = f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    print(f"\nresults ({when}; {machine}; {load})\n")
    print(table(results))
    OUT.mkdir(parents=True, exist_ok=True)
    summary = {"when": when, "machine": machine, "load": load, "results": results}
    (OUT / "results.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return 0 if all(r["result"] != "FAIL" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
