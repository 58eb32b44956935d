"""Memory: `corrections validate` must read sheets in bounded memory.

Peak RSS of the validate process for 100 000 and 1 000 000-row sheets, CSV and Parquet:
each at most 300 MB, and 10× the rows may cost at most 1.3× the memory (flat, not linear).
Also prints validate's rows/s.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CORRECTIONS, require_ok, run_measured, sheet_file, verdict

SIZES = (100_000, 1_000_000)
FORMATS = ("csv", "parquet")
MAX_RSS_MB = 300.0
MAX_GROWTH = 1.3


def main() -> None:
    peaks: dict[tuple[str, int], float] = {}
    ok = True
    for fmt in FORMATS:
        for n in SIZES:
            sheet = sheet_file(n, fmt)
            m = run_measured([str(CORRECTIONS), "validate", str(sheet)])
            require_ok(m)
            if f"{n} rows: {n} valid, 0 invalid" not in m.stderr:
                raise SystemExit(f"validate did not report {n} valid rows: {m.stderr[-500:]}")
            peaks[fmt, n] = m.maxrss_mb
            ok &= m.maxrss_mb <= MAX_RSS_MB
            print(f"{fmt:<8} {n:>9} rows ({sheet.stat().st_size / 1e6:.0f} MB file): "
                  f"{m.wall:6.1f} s, {n / m.wall:8.0f} rows/s, peak RSS {m.maxrss_mb:6.1f} MB, "
                  f"CPU {m.cpu:.1f} s")
    growth = {fmt: peaks[fmt, SIZES[1]] / peaks[fmt, SIZES[0]] for fmt in FORMATS}
    for fmt, g in growth.items():
        print(f"{fmt}: RSS(1M) / RSS(100k) = {g:.2f}")
    ok &= all(g <= MAX_GROWTH for g in growth.values())
    worst = max(peaks.values())
    verdict("memory (validate)", f"peak {worst:.0f} MB; RSS(1M)/RSS(100k) "
            + ", ".join(f"{f} {g:.2f}" for f, g in growth.items()),
            f"<= {MAX_RSS_MB:g} MB and <= {MAX_GROWTH}", ok,
            {"peaks": {f"{f}_{n}": v for (f, n), v in peaks.items()}, "growth": growth})


if __name__ == "__main__":
    main()
