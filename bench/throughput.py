"""Throughput: how close `apply` gets to the latency-bound ideal at a given concurrency.

With L seconds of API latency and C requests in flight, a row needing a lookup and a mutation
can at best finish at C / (2 L) rows per second. The pipeline should reach >= 90 % of that,
measured end to end (process start to exit, report written). The sandbox's own ceiling is
measured too, so a shortfall is not blamed on the emulator.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
from common import (
    EVENT_TYPE,
    MONTH,
    SANDBOX_TOKEN,
    apply_argv,
    env_for,
    event_id,
    events_file,
    order_id,
    report_counts,
    require_ok,
    run_measured,
    sandbox,
    sheet_file,
    startup_cost,
    verdict,
    workdir,
)

ROWS = 2000
LATENCY_MS = 50.0
CONCURRENCY = 16
TARGET = 0.90
#: Runs per figure; the median is judged (run-to-run spread on 2 shared cores is ~±15 %).
REPEATS = 3


def ideal_rate(concurrency: int = CONCURRENCY, latency_ms: float = LATENCY_MS) -> float:
    """Rows/s when every slot is always busy and each row costs two round trips."""
    return concurrency / (2 * latency_ms / 1000)


def measure_pipeline(rows: int = ROWS, latency_ms: float = LATENCY_MS,
                     concurrency: int = CONCURRENCY) -> dict[str, float]:
    """One `corrections apply` over `rows` fresh rows; returns rates and counts."""
    events, sheet = events_file(rows), sheet_file(rows)
    work = workdir(f"throughput_{rows}_{latency_ms:g}_{concurrency}")
    with sandbox(events, latency_ms) as sb:
        m = run_measured(apply_argv(sheet, work, "--concurrency", str(concurrency)),
                         env_for(sb.url))
        stats = sb.stats()
    require_ok(m)
    counts = report_counts(work / "audit.csv")
    if counts.get("applied") != rows:
        raise SystemExit(f"expected {rows} applied rows, the report says {counts}")
    return {
        "rows": rows, "wall": m.wall, "cpu": m.cpu, "run_seconds": m.summary.get("seconds", 0.0),
        "rate": rows / m.wall,
        "run_rate": rows / m.summary["seconds"] if m.summary.get("seconds") else 0.0,
        "lookups": stats["requests"]["lookup"], "mutations": stats["requests"]["mutation"],
        "maxrss_mb": m.maxrss_mb,
    }


def median_pipeline(rows: int = ROWS, latency_ms: float = LATENCY_MS,
                    concurrency: int = CONCURRENCY, repeats: int = REPEATS
                    ) -> tuple[dict[str, float], list[float]]:
    """`measure_pipeline` `repeats` times: the median run, and every run's rows/s."""
    runs = sorted((measure_pipeline(rows, latency_ms, concurrency) for _ in range(repeats)),
                  key=lambda r: r["rate"])
    return runs[len(runs) // 2], [r["rate"] for r in runs]


async def _load(url: str, seconds: float, concurrency: int) -> int:
    """Closed-loop load: `concurrency` workers alternating lookups and mutations.

    aiohttp's client, not httpx: httpx burns ~1-3 ms of CPU per request at this concurrency
    and would measure itself instead of the sandbox.
    """
    done = 0
    stop_at = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Authorization": f"Bearer {SANDBOX_TOKEN}"}
    async with aiohttp.ClientSession(url, connector=connector, headers=headers) as http:
        async def worker(w: int) -> None:
            nonlocal done
            i = w
            while time.perf_counter() < stop_at:
                n = i % 1000
                if i % 2:
                    path = "/v1/event-mutation/lookup"
                    body: dict[str, object] = {
                        "event_type": EVENT_TYPE, "attribute_key": "order_id",
                        "attribute_value": order_id(n), "from_timestamp": f"{MONTH}-01T00:00:00Z",
                        "to_timestamp": f"{MONTH}-31T23:59:59Z"}
                else:
                    path = "/v1/event-mutation"
                    body = {"event_id": event_id(n), "timestamp": f"{MONTH}-15T00:00:00Z",
                            "event_attributes": {"note": str(i)}, "merge_mode": "merge",
                            "idempotency_key": f"load-{i}"}
                async with http.post(path, json=body) as r:
                    await r.read()
                    r.raise_for_status()
                done += 1
                i += concurrency
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return done


def sandbox_ceiling(seconds: float = 4.0, concurrency: int = 32) -> dict[str, float]:
    """Requests/s the sandbox serves at zero latency, and per CPU-second of its process.

    The load generator shares the 2 cores, so requests/s is a lower bound; requests per
    sandbox CPU-second is what one fully busy sandbox core could serve.
    """
    with sandbox(events_file(1000), 0.0) as sb:
        cpu0 = sb.cpu_seconds()
        t0 = time.perf_counter()
        n = asyncio.run(_load(sb.url, seconds, concurrency))
        wall = time.perf_counter() - t0
        cpu = sb.cpu_seconds() - cpu0
    return {"requests": n, "rps": n / wall, "rps_per_cpu": n / cpu if cpu else 0.0,
            "sandbox_busy": cpu / wall}


def main() -> None:
    ideal = ideal_rate()
    r, rates = median_pipeline()
    start = startup_cost()
    ratio = r["rate"] / ideal
    print(f"rows {ROWS}, latency {LATENCY_MS:g} ms, --concurrency {CONCURRENCY}: "
          f"ideal {ideal:.0f} rows/s")
    print(f"  {REPEATS} runs: " + ", ".join(f"{x:.1f}" for x in rates) + " rows/s; median:")
    print(f"  end to end: {r['wall']:.2f} s wall → {r['rate']:.1f} rows/s "
          f"({ratio:.3f} of ideal); pipeline CPU {r['cpu']:.2f} s, peak RSS "
          f"{r['maxrss_mb']:.0f} MB")
    print(f"  inside the run (summary 'seconds', excludes start-up, sheet check, report): "
          f"{r['run_seconds']:.2f} s → {r['run_rate']:.1f} rows/s "
          f"({r['run_rate'] / ideal:.3f} of ideal)")
    print(f"  start-up alone (`corrections --help`): {start.wall:.2f} s wall")
    print(f"  sandbox saw {r['lookups']} lookups, {r['mutations']} mutations")
    c = sandbox_ceiling()
    need = 2 * ideal
    print(f"sandbox ceiling at 0 ms: {c['rps']:.0f} req/s measured with an aiohttp load "
          f"generator on the same 2 cores (sandbox {c['sandbox_busy']:.0%} busy); "
          f"{c['rps_per_cpu']:.0f} req per sandbox CPU-second; this bench needs "
          f"{need:.0f} req/s")
    verdict("throughput", f"{ratio:.3f} of ideal ({r['rate']:.1f}/{ideal:.0f} rows/s)",
            f">= {TARGET:.2f}", ratio >= TARGET,
            {"ratio": ratio, "run_ratio": r["run_rate"] / ideal,
             "sandbox_rps": c["rps"], "sandbox_rps_per_cpu": c["rps_per_cpu"]})


if __name__ == "__main__":
    main()
