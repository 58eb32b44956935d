"""Write the sample correction sheets (CSV and Parquet) against sample_data/events.csv.

Run from the repo root: `python sample_data/make_corrections.py`. The rows are chosen so one
`corrections apply --sandbox` shows every status; the comments say which row shows what.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
COLUMNS = [
    "event_type", "lookup_key", "lookup_value", "event_time", "event_id", "timestamp",
    "set.final_price", "set.discount_code", "set.plan", "event_attributes", "merge_mode",
    "idempotency_key",
]


def order(order_id: str, month: str, price: str = "", code: str = "", **extra: str) -> dict:
    return {"event_type": "order_completed", "lookup_key": "order_id", "lookup_value": order_id,
            "event_time": month, "set.final_price": price, "set.discount_code": code, **extra}


ROWS: list[dict[str, str]] = [
    # applied: prices corrected by order id, September and October
    order("ORD-1001", "2026-09", "109.99"),
    order("ORD-1002", "2026-09", "54.50", "SPRING20"),
    order("ORD-1003", "2026-09", "00129.50"),           # text kept byte for byte
    order("ORD-1004", "2026-09", "21.99"),
    order("ORD-1008", "2026-09", "", "WELCOME10"),
    order("ORD-1010", "2026-09", "84.50"),
    order("ORD-1011", "2026-09", "209.50"),
    order("ORD-1032", "2026-10", "82.00"),
    order("ORD-1033", "2026-10", "52.00", "AUTUMN"),
    order("ORD-1034", "2026-10", "52.50"),
    order("ORD-1035", "2026-10", "239.99"),
    order("ORD-1036", "2026-10", "31.00"),
    # applied: a signup's plan corrected by customer id, window given explicitly
    {"event_type": "user_signed_up", "lookup_key": "customer_id", "lookup_value": "CUST-00014",
     "event_time": "2026-09-01", "set.plan": "pro"},
    # applied: by event_id, no lookup needed
    {"event_id": "683b2922-4bad-4912-95d6-d2f309f7adc3", "timestamp": "2026-09-30T12:00:00Z",
     "event_attributes": '{"final_price": "95.50", "note": {"reason": "late discount"}}'},
    # applied, replace mode: the refund's attributes replaced as a whole
    {"event_type": "refund_issued", "lookup_key": "order_id", "lookup_value": "ORD-1044",
     "event_time": "2026-10", "event_attributes": '{"order_id": "ORD-1044", "amount": "59.99"}',
     "merge_mode": "replace"},
    # unchanged: ORD-1007 already costs 149.99
    order("ORD-1007", "2026-09", "149.99"),
    # duplicate: the very first row again
    order("ORD-1001", "2026-09", "109.99"),
    # invalid: unparseable month, a system event type, a bad merge mode
    order("ORD-1020", "September", "101.00"),
    {"event_type": "$pageview", "lookup_key": "path", "lookup_value": "/pricing",
     "event_time": "2026-09", "set.plan": "x"},
    order("ORD-1021", "2026-09", "92.00", merge_mode="upsert"),
    # not_found: no such order; and an order whose only event is deleted
    order("ORD-9999", "2026-09", "10.00"),
    order("ORD-1013", "2026-09", "119.99"),
    # not_found by 404: an event id that does not exist
    {"event_id": "00000000-0000-4000-8000-000000000001", "timestamp": "2026-09-15T00:00:00Z",
     "set.final_price": "1.00"},
    # ambiguous: ORD-1042 matches two events in October
    order("ORD-1042", "2026-10", "189.00"),
    # conflict (409): a key an earlier tool already used with another event
    {"event_id": "6a09e79d-ad4c-47cc-82ab-6dbfcb196dcd", "timestamp": "2026-09-13T00:00:00Z",
     "set.final_price": "119.50", "idempotency_key": "legacy-fix-001"},
    # rejected (422): the timestamp is not in the event's calendar month
    {"event_id": "56aa13da-f672-4d0b-89fc-24af6e674709", "timestamp": "2026-09-15T00:00:00Z",
     "set.final_price": "94.50"},
]


#: A small sheet for both targets: Usermaven finds each order, mParticle gets it per customer.
BOTH_TARGETS = [
    {"order_id": "ORD-1001", "identity.customer_id": "CUST-00107", "set.final_price": "109.99"},
    {"order_id": "ORD-1002", "identity.customer_id": "CUST-00043", "set.final_price": "54.50"},
    {"order_id": "ORD-1004", "identity.customer_id": "CUST-00010", "set.final_price": "21.99"},
    {"order_id": "ORD-1005", "identity.customer_id": "CUST-00058", "set.final_price": "19.50"},
]


def main() -> None:
    with open(HERE / "corrections.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in ROWS:
            writer.writerow(row)
    table = pa.table({c: [row.get(c) or None for row in ROWS] for c in COLUMNS},
                     schema=pa.schema([(c, pa.string()) for c in COLUMNS]))
    pq.write_table(table, HERE / "corrections.parquet")
    with open(HERE / "both_targets.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, list(BOTH_TARGETS[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(BOTH_TARGETS)


if __name__ == "__main__":
    main()
