"""Start-up and the rest of a short run: where the wall of a 300-row `apply` goes.

A 300-row sheet at 50 ms and `--concurrency 16` needs ~1.9 s of requests, so start-up (the
interpreter, the imports), opening the checkpoint, the report and the exit weigh a lot. This
prints, median of 5: the wall of `corrections --help` (start-up alone), of `python -c "import
aiohttp"` (what any aiohttp client pays before its first request), and of the 300-row run;
then one run with `--log-format json` split by the arrival of its log lines (start-up to the
API announcement, to the run's start, the run, to the summary, to exit).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from common import (
    CORRECTIONS,
    ROOT,
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

ROWS = 300
LATENCY_MS = 50.0
CONCURRENCY = 16
REPEATS = 5


def _median_wall(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, list[float]]:
    walls = []
    for _ in range(REPEATS):
        m = run_measured(argv, env)
        require_ok(m)
        walls.append(m.wall)
    return statistics.median(walls), walls


def _split(sheet: Path, url: str) -> list[tuple[str, float]]:
    """One JSON-logging run: (event, seconds since the process started) per first log line
    of each kind, and the exit."""
    work = workdir("startup_split")
    argv = apply_argv(sheet, work, "--concurrency", str(CONCURRENCY), "--log-format", "json")
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env_for(url), cwd=ROOT)
    assert proc.stderr is not None
    marks: list[tuple[str, float]] = []
    for line in proc.stderr:
        t = time.perf_counter() - t0
        try:
            event = str(json.loads(line).get("event"))
        except ValueError:
            continue
        if event not in {e for e, _ in marks}:
            marks.append((event, t))
    code = proc.wait()
    marks.append((f"exit {code}", time.perf_counter() - t0))
    return marks


def main() -> None:
    help_wall, helps = _median_wall([str(CORRECTIONS), "--help"])
    aiohttp_wall, _ = _median_wall([sys.executable, "-c", "import aiohttp"])
    print(f"`corrections --help`: {help_wall:.3f} s wall (median of {REPEATS}: "
          + ", ".join(f"{w:.3f}" for w in helps) + ")")
    print(f"`python -c 'import aiohttp'`: {aiohttp_wall:.3f} s wall")
    sheet = head_sheet(sheet_file(2000), ROWS)
    walls = []
    with sandbox(events_file(2000), LATENCY_MS) as sb:
        for _ in range(REPEATS):
            httpx.post(sb.url + "/_sandbox/reset", timeout=30).raise_for_status()
            work = workdir("startup_run")
            m = run_measured(apply_argv(sheet, work, "--concurrency", str(CONCURRENCY)),
                             env_for(sb.url))
            require_ok(m)
            counts = report_counts(work / "audit.csv")
            if counts.get("applied") != ROWS:
                raise SystemExit(f"expected {ROWS} applied rows, the report says {counts}")
            walls.append(m.wall)
        httpx.post(sb.url + "/_sandbox/reset", timeout=30).raise_for_status()
        marks = _split(sheet, sb.url)
    run_wall = statistics.median(walls)
    print(f"{ROWS} rows, {LATENCY_MS:g} ms, --concurrency {CONCURRENCY}: {run_wall:.3f} s wall "
          f"(median of {REPEATS}: " + ", ".join(f"{w:.3f}" for w in walls) + ")")
    print("one run with --log-format json, first line of each kind (s since start): "
          + ", ".join(f"{e} {t:.3f}" for e, t in marks))
    verdict("startup", f"--help {help_wall:.2f} s (import aiohttp {aiohttp_wall:.2f} s); "
            f"{ROWS} rows {run_wall:.2f} s", "-", None,
            {"help_wall": help_wall, "aiohttp_wall": aiohttp_wall, "run_wall": run_wall,
             "split": marks, "pyc": os.environ.get("PYTHONDONTWRITEBYTECODE", "")})


if __name__ == "__main__":
    main()
