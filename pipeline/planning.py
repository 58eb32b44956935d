"""Between a plan run and a plan file: export what a run decided, import it to be carried out.

`plan --out` runs the sheet without sending (lookups only) into a throw-away checkpoint; its
decided items become the plan file here. Each item gets a whole-state guard: the attributes
the event held when it was looked up, with the earlier items of the same plan on that event
folded in, so `apply --plan` sends a change only while the event is exactly as reviewed.

`apply --plan` turns the items back into corrections addressed by event id, carrying the
plan's own idempotency keys (used as they are: the reviewed key is the sent key) and the
guard; the one engine then refreshes, checks, sends and records them like any other row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pipeline.checkpoint import Checkpoint
from pipeline.guards import Guard
from pipeline.keys import digest
from pipeline.model import Correction, RowProblem, Status
from pipeline.planfile import Plan, PlanItem, Skipped
from pipeline.timeutil import parse_timestamp

NOT_CHECKED = "not checked (no lookup): sent by event_id without reading the event first"


def plan_from_checkpoint(cp: Checkpoint, generation: int, *, api: Mapping[str, Any],
                         source: Mapping[str, Any], options: Mapping[str, Any],
                         created_at: str,
                         users: Mapping[str, Mapping[str, Any]] | None = None) -> Plan:
    """The items a plan-only run decided (status `planned`), with guards, in sheet order.

    `users`: the mParticle user of each row (by row key) when the plan covers mParticle.
    """
    items: list[PlanItem] = []
    skipped: list[Skipped] = []
    expected: dict[str, dict[str, Any]] = {}  # event -> state once earlier items landed
    for line in cp.report_rows(generation):
        status = line["status"]
        if status != Status.PLANNED.value or not line["idempotency_key"]:
            skipped.append(Skipped(status, line["error"] or status, event_id=line["event_id"],
                                   row_number=line["row_number"]))
            continue
        event_id = line["event_id"]
        after = json.loads(line["attributes_after"])
        before = (json.loads(line["attributes_before"])
                  if line["attributes_before"] is not None else None)
        state = expected.get(event_id, before)
        guard = None if state is None else Guard(state, whole=True)
        if state is not None:
            expected[event_id] = (dict(after) if line["merge_mode"] == "replace"
                                  else {**state, **after})
        items.append(PlanItem(
            event_id=event_id, timestamp=line["timestamp"],
            idempotency_key=line["idempotency_key"], merge_mode=line["merge_mode"],
            attributes_after=after, attributes_before=before, guard=guard,
            event_type=line["event_type"], lookup_key=line["lookup_key"],
            lookup_value=line["lookup_value"], row_number=line["row_number"],
            note=None if guard is not None else NOT_CHECKED,
            user=(users or {}).get(line["row_key"]),
        ))
    return Plan(kind="sheet", api=api, source=source, options=options, items=tuple(items),
                skipped=tuple(skipped), created_at=created_at)


def plan_corrections(plan: Plan, *, refresh: bool = True,
                     batch_size: int = 5000) -> Iterator[list[Correction | RowProblem]]:
    """The plan's items as corrections, in plan order, batch by batch.

    Row numbers are the items' positions in the plan (1, 2, …); each item's row key is
    derived from its key and event, so a resumed plan lines up with its checkpoint.
    """
    batch: list[Correction | RowProblem] = []
    for n, item in enumerate(plan.items, start=1):
        batch.append(_correction(n, item, refresh))
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _correction(number: int, item: PlanItem, refresh: bool) -> Correction:
    return Correction(
        row_number=number,
        row_key=digest("plan-item", item.idempotency_key, item.event_id)[:32],
        attributes=dict(item.attributes_after), merge_mode=item.merge_mode,
        event_type=item.event_type, event_id=item.event_id,
        timestamp=parse_timestamp(item.timestamp), lookup_key=item.lookup_key,
        lookup_value=item.lookup_value, idempotency_key=item.idempotency_key,
        event_time=parse_timestamp(item.timestamp),
        guard=item.guard, exact_key=True,
        refresh=refresh and item.guard is not None and item.event_type is not None,
        known_before=item.attributes_before,
        identities=dict((item.user or {}).get("identities") or {}),
        mpid=None if not item.user or item.user.get("mpid") is None else str(item.user["mpid"]),
        mparticle_attributes=item.mparticle_attributes,
    )


def sheet_users(batches: Iterable[list[Correction | RowProblem]]) -> dict[str, dict[str, Any]]:
    """The mParticle user of every row that names one, by row key."""
    users: dict[str, dict[str, Any]] = {}
    for batch in batches:
        for c in batch:
            if isinstance(c, Correction) and (c.identities or c.mpid is not None):
                users[c.row_key] = {"identities": dict(c.identities), "mpid": c.mpid}
    return users
