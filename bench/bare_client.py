"""The bare client: what a bounded aiohttp worker pool gets through the same API, and no more.

Per row of the bench sheet, one lookup and one mutation with the bodies `corrections apply`
sends (same fields, same window, the event's own `_timestamp`, a 64-character content-derived
idempotency key), 16 workers over one keep-alive session (`limit=16`). No checkpoint, no
report, no retries: the floor every real tool pays. Run as a child process so that its
interpreter start-up and imports are counted like the tool's.

Usage: python bench/bare_client.py SHEET.csv API_URL [CONCURRENCY]   (token: USERMAVEN_TOKEN)
Prints one JSON line: rows, applied, seconds (inside the script, after imports).
"""

from __future__ import annotations

import asyncio
import calendar
import csv
import hashlib
import json
import os
import sys
import time

import aiohttp

KEY_PREFIX = "corr-v1-"


def _window(month: str) -> tuple[str, str]:
    """A `YYYY-MM` cell as the lookup window the tool sends (first and last millisecond)."""
    year, mon = (int(x) for x in month.split("-"))
    last = calendar.monthrange(year, mon)[1]
    return (f"{year:04d}-{mon:02d}-01T00:00:00.000Z",
            f"{year:04d}-{mon:02d}-{last:02d}T23:59:59.999Z")


def _key(event_id: str, attrs: dict[str, str]) -> str:
    text = event_id + json.dumps(attrs, sort_keys=True, separators=(",", ":"))
    return (KEY_PREFIX + hashlib.sha256(text.encode()).hexdigest())[:64]


async def run(sheet: str, url: str, token: str, concurrency: int) -> dict[str, float]:
    with open(sheet, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    applied = 0
    t0 = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(url, connector=connector, headers=headers) as http:
        todo = iter(rows)

        async def worker() -> None:
            nonlocal applied
            for row in todo:  # a shared iterator: each row is taken by exactly one worker
                start, end = _window(row["event_time"])
                async with http.post("/v1/event-mutation/lookup", json={
                        "event_type": row["event_type"], "attribute_key": row["lookup_key"],
                        "attribute_value": row["lookup_value"], "from_timestamp": start,
                        "to_timestamp": end}) as r:
                    found = (await r.json())["data"]
                if len(found) != 1:
                    continue
                event = found[0]
                attrs = {"final_price": row["set.final_price"]}
                async with http.post("/v1/event-mutation", json={
                        "event_id": event["event_id"],
                        "timestamp": event["_timestamp"].replace(" ", "T") + ".000Z",
                        "event_attributes": attrs, "merge_mode": "merge",
                        "idempotency_key": _key(event["event_id"], attrs)}) as r:
                    answer = await r.json()
                if r.status == 200 and answer.get("status") == 1:
                    applied += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"rows": len(rows), "applied": applied, "seconds": time.perf_counter() - t0}


def main() -> None:
    sheet, url = sys.argv[1], sys.argv[2]
    concurrency = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    out = asyncio.run(run(sheet, url, os.environ["USERMAVEN_TOKEN"], concurrency))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
