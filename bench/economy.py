"""Economy: identical lookups are made once, and no-op rows send nothing.

10 000 rows over 1 000 orders (10 rows per order, spread through the sheet): per order, nine
rows set an attribute to the value the event already holds (`unchanged`, no mutation) and one
row really changes `final_price`. Targets, from the sandbox's own request counters: at most
1 000 lookups, and exactly 1 000 mutations, i.e. zero for the 9 000 unchanged rows.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    EVENT_TYPE,
    MONTH,
    OUT,
    apply_argv,
    env_for,
    events_file,
    new_price,
    order_id,
    report_counts,
    require_ok,
    run_measured,
    sandbox,
    verdict,
    workdir,
)

ORDERS = 1000
PER_ORDER = 10
CHANGE_AT = 5  # which of an order's rows is the real change
EXTRA = PER_ORDER - 1


def economy_sheet() -> Path:
    """Row (j, o) for j in 0..9, o in 0..999: all orders' j-th row, then the next j."""
    path = OUT / "data" / f"economy_{ORDERS}x{PER_ORDER}.csv"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    attrs = [f"attr_{k}" for k in range(EXTRA)]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["event_type", "lookup_key", "lookup_value", "event_time",
                    "set.final_price", *(f"set.{a}" for a in attrs)])
        for j in range(PER_ORDER):
            for o in range(ORDERS):
                cells = [""] * (1 + EXTRA)
                if j == CHANGE_AT:
                    cells[0] = new_price(o)
                else:
                    k = j if j < CHANGE_AT else j - 1
                    cells[1 + k] = f"v{k}-{o}"  # what events_file put there: a no-op
                w.writerow([EVENT_TYPE, "order_id", order_id(o), MONTH, *cells])
    return path


def main() -> None:
    sheet = economy_sheet()
    events = events_file(ORDERS, extra_attrs=EXTRA)
    work = workdir("economy")
    with sandbox(events, 0.0) as sb:
        m = run_measured(apply_argv(sheet, work), env_for(sb.url))
        stats = sb.stats()
    require_ok(m)
    lookups, mutations = stats["requests"]["lookup"], stats["requests"]["mutation"]
    counts = report_counts(work / "audit.csv")
    rows = ORDERS * PER_ORDER
    print(f"{rows} rows, {ORDERS} distinct order ids, {ORDERS} real changes: "
          f"{lookups} lookups, {mutations} mutations sent ({m.wall:.1f} s); "
          f"report statuses {counts}; summary says {m.summary.get('lookups')} lookups, "
          f"{m.summary.get('mutations')} mutations")
    ok = (lookups <= ORDERS and mutations == ORDERS
          and counts.get("unchanged") == rows - ORDERS and counts.get("applied") == ORDERS)
    verdict("economy", f"{lookups} lookups, {mutations - ORDERS} mutations for no-op rows",
            f"<= {ORDERS} lookups, 0 no-op mutations", ok,
            {"lookups": lookups, "mutations": mutations, "counts": counts})


if __name__ == "__main__":
    main()
