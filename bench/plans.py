"""Reviewed plans: what `apply --plan` costs with and without re-reading each event.

One sandbox (50 ms, reset between runs so every run starts from the same events), 2 000 rows,
`--concurrency 16`. Printed side by side, end to end (start-up and report included):

* `apply SHEET` — a lookup and a mutation per row (the ideal is C / 2L);
* `apply --plan` — the plan's guard is checked against a fresh read of each event first
  (also two requests per item);
* `apply --plan --no-refresh` — one request per item (the ideal is C / L), so about twice the
  rows/s of a lookup run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from common import (
    CORRECTIONS,
    EVENT_TYPE,
    MONTH,
    apply_argv,
    env_for,
    events_file,
    report_counts,
    require_ok,
    run_measured,
    sandbox,
    sheet_file,
    verdict,
    workdir,
)

ROWS = 2000
LATENCY_MS = 50.0
CONCURRENCY = 16
#: `--no-refresh` against a lookup run: one round trip per row instead of two.
TARGET = 1.7


def main() -> None:
    events, sheet = events_file(ROWS), sheet_file(ROWS)
    work = workdir("plans")
    plan = work / "bench.plan.json"
    conc = ["--concurrency", str(CONCURRENCY)]
    (work / "sheet").mkdir()
    with sandbox(events, LATENCY_MS) as sb:
        env = env_for(sb.url)

        def fresh() -> None:
            httpx.post(sb.url + "/_sandbox/reset", timeout=30).raise_for_status()

        made = run_measured([str(CORRECTIONS), "plan", str(sheet), "--out", str(plan),
                             "--report", str(work / "plan.csv"), "--quiet", *conc], env)
        require_ok(made)
        rates: dict[str, float] = {}
        for name, argv in (
            ("lookup run", apply_argv(sheet, work / "sheet", *conc)),
            ("apply --plan", _plan_argv(plan, work / "refresh", conc)),
            ("apply --plan --no-refresh",
             _plan_argv(plan, work / "norefresh", [*conc, "--no-refresh"])),
        ):
            fresh()
            m = run_measured(argv, env)
            require_ok(m)
            report = Path(argv[argv.index("--report") + 1])
            counts = report_counts(report)
            if counts.get("applied") != ROWS:
                raise SystemExit(f"{name}: expected {ROWS} applied, the report says {counts}")
            rates[name] = ROWS / m.wall
            print(f"{name:<28} {rates[name]:7.1f} rows/s  ({m.wall:.2f} s, "
                  f"{m.cpu:.2f} CPU-s)", flush=True)
    ratio = rates["apply --plan --no-refresh"] / rates["lookup run"]
    ideal_lookup = CONCURRENCY / (2 * LATENCY_MS / 1000)
    verdict("plans", f"--no-refresh {ratio:.2f}× a lookup run "
            f"({rates['apply --plan --no-refresh']:.0f} vs {rates['lookup run']:.0f} rows/s; "
            f"apply --plan with refresh {rates['apply --plan']:.0f}; lookup ideal "
            f"{ideal_lookup:.0f})", f"≥ {TARGET}×", ratio >= TARGET,
            {"rates": rates, "event_type": EVENT_TYPE, "month": MONTH})


def _plan_argv(plan: Path, work: Path, extra: list[str]) -> list[str]:
    work.mkdir(parents=True, exist_ok=True)
    return [str(CORRECTIONS), "apply", "--plan", str(plan), "--checkpoint",
            str(work / "cp.sqlite"), "--report", str(work / "audit.csv"), *extra]


if __name__ == "__main__":
    main()
