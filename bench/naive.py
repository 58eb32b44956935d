"""The baseline: the loop a team writes today, one request after another.

pandas reads the sheet; for each row, one lookup then one mutation with a synchronous httpx
client (keep-alive, so the baseline is not handicapped by reconnecting). No concurrency, no
checkpoint, no report. Its per-row time is what `vs_naive.py` compares the pipeline with.
"""

from __future__ import annotations

import calendar
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import pandas as pd
from common import (
    SANDBOX_TOKEN,
    events_file,
    head_sheet,
    sandbox,
    sheet_file,
    verdict,
)

ROWS = 300
LATENCY_MS = 50.0


def naive_apply(sheet: Path, api_url: str, token: str) -> dict[str, float]:
    """What a hand-written correction script does. Returns rows, applied, seconds."""
    t0 = time.perf_counter()
    df = pd.read_csv(sheet, dtype=str)
    applied = 0
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {token}"},
                      timeout=30) as http:
        price = list(df.columns).index("set.final_price")
        for row in df.itertuples(index=False):
            year, month = (int(x) for x in row.event_time.split("-"))
            last = calendar.monthrange(year, month)[1]
            found = http.post("/v1/event-mutation/lookup", json={
                "event_type": row.event_type, "attribute_key": row.lookup_key,
                "attribute_value": row.lookup_value,
                "from_timestamp": f"{year:04d}-{month:02d}-01T00:00:00Z",
                "to_timestamp": f"{year:04d}-{month:02d}-{last:02d}T23:59:59Z",
            }).json()["data"]
            if len(found) != 1:
                continue
            event = found[0]
            r = http.post("/v1/event-mutation", json={
                "event_id": event["event_id"],
                "timestamp": event["_timestamp"].replace(" ", "T") + "Z",
                "event_attributes": {"final_price": row[price]},
                "merge_mode": "merge", "idempotency_key": str(uuid.uuid4()),
            })
            if r.status_code == 200 and r.json().get("status") == 1:
                applied += 1
    return {"rows": len(df), "applied": applied, "seconds": time.perf_counter() - t0}


def measure_naive(rows: int = ROWS, latency_ms: float = LATENCY_MS,
                  total_rows: int = 2000) -> dict[str, float]:
    """The naive loop over the first `rows` rows of the `total_rows` bench sheet."""
    sheet = head_sheet(sheet_file(total_rows), rows)
    with sandbox(events_file(total_rows), latency_ms) as sb:
        out = naive_apply(sheet, sb.url, SANDBOX_TOKEN)
        stats = sb.stats()
    if out["applied"] != rows:
        raise SystemExit(f"naive loop applied {out['applied']} of {rows} rows")
    out["lookups"] = stats["requests"]["lookup"]
    out["mutations"] = stats["requests"]["mutation"]
    return out


def main() -> None:
    r = measure_naive()
    per_row = r["seconds"] / r["rows"]
    floor = 2 * LATENCY_MS / 1000
    print(f"naive loop, {r['rows']:.0f} rows at {LATENCY_MS:g} ms: {r['seconds']:.2f} s, "
          f"{1000 * per_row:.1f} ms/row ({r['rows'] / r['seconds']:.2f} rows/s); "
          f"floor is 2 × latency = {1000 * floor:.0f} ms/row; "
          f"{r['lookups']} lookups, {r['mutations']} mutations")
    verdict("naive baseline", f"{r['rows'] / r['seconds']:.2f} rows/s "
            f"({1000 * per_row:.1f} ms/row)", "baseline, no target", None,
            {"rate": r["rows"] / r["seconds"]})


if __name__ == "__main__":
    main()
