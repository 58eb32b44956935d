"""Undo at the data level: the plan that returns each event a run changed to its earlier state.

For every event the chosen runs mutated, the checkpoint holds the attributes seen before the
first of those mutations (the lookup's answer) and every change applied after it, in order.
The revert item is a `replace` with that earlier state, guarded by the state the runs left
(the before-state with each applied change folded in): an event someone changed since is
`drifted` when the revert is applied and left alone, unless `--force` drops the guard.

Events whose earlier state was never seen (direct `event_id` rows are sent without a lookup)
cannot be restored and are listed `cannot_revert` with the reason. The revert's keys are
derived from what it restores and from what it reverts, so writing the same revert twice gives
the same plan, and applying it twice sends nothing the second time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.checkpoint import Checkpoint
from pipeline.guards import Guard
from pipeline.keys import KEY_PREFIX, MAX_KEY_LENGTH, canonical_json, digest
from pipeline.targets import PRIMARY, TARGETS, get
from pipeline.timeutil import utcnow

if TYPE_CHECKING:
    from pipeline.planfile import Plan, Skipped

#: Mutation statuses that mean "the API applied this change" (verify may have relabelled it).
_APPLIED = ("applied", "verified", "mismatch")
#: The API's limit on `event_attributes`, as compact UTF-8 JSON.
_MAX_ATTRIBUTES_BYTES = 10240
CANNOT_REVERT = "cannot_revert"


@dataclass
class _EventHistory:
    """One event's mutations in the runs being reverted, oldest first."""

    event_id: str
    timestamp: str
    event_type: str | None
    lookup_key: str | None
    lookup_value: str | None
    row_number: int | None
    before: Mapping[str, Any] | None
    changes: list[tuple[Mapping[str, Any], str]] = field(default_factory=list)
    runs: set[str] = field(default_factory=set)


def revert_plan(cp: Checkpoint, runs: Sequence[str] | None, *, force: bool = False) -> Plan:
    """The plan undoing `runs` (None: every run of the checkpoint)."""
    # loaded here: every apply reads `run_history`, only `revert` builds a plan
    from pipeline.planfile import Plan, PlanError, PlanItem, Skipped

    known = [r[0] for r in cp.db.execute("SELECT run_id FROM runs ORDER BY started_at, rowid")]
    chosen = list(known) if runs is None else list(dict.fromkeys(runs))
    missing = [r for r in chosen if r not in known]
    if missing:
        raise PlanError(f"{cp.path} has no run {', '.join(missing)}; `corrections status "
                        f"--checkpoint {cp.path}` lists the runs (last first)")
    histories = _histories(cp, chosen)
    items: list[PlanItem] = []
    skipped: list[Skipped] = []
    users, unreachable = _recipients(cp, chosen, {h.event_id: h for h in histories})
    skipped.extend(unreachable)
    for h in histories:
        if h.before is None:
            skipped.append(Skipped(
                CANNOT_REVERT, "its state before the run was never seen (an event_id row is "
                "sent without a lookup), so there is nothing to restore it to",
                event_id=h.event_id, row_number=h.row_number))
            continue
        size = len(json.dumps(dict(h.before), separators=(",", ":"), ensure_ascii=False)
                   .encode("utf-8"))
        if size > _MAX_ATTRIBUTES_BYTES:
            skipped.append(Skipped(
                CANNOT_REVERT, f"its earlier attributes are {size} bytes as JSON, over the "
                "API's 10 KB limit for one mutation", event_id=h.event_id,
                row_number=h.row_number))
            continue
        left = _fold(h.before, h.changes)
        user = users.get(h.event_id)
        items.append(PlanItem(
            user=user,
            mparticle_attributes=None if user is None else _restored(h.before, h.changes),
            event_id=h.event_id, timestamp=h.timestamp,
            idempotency_key=_revert_key(h.event_id, h.before, left, sorted(h.runs)),
            merge_mode="replace", attributes_after=dict(h.before),
            attributes_before=left, guard=None if force else Guard(left, whole=True),
            event_type=h.event_type, lookup_key=h.lookup_key, lookup_value=h.lookup_value,
            row_number=h.row_number,
            note=f"restores the state before {', '.join(sorted(h.runs))}",
        ))
    if not items and not skipped:
        raise PlanError(f"the run(s) {', '.join(chosen) or '(none)'} applied no mutation; "
                        "there is nothing to revert")
    api: dict[str, Any] = {PRIMARY: get(PRIMARY).checkpoint_identity(cp)}
    options: dict[str, Any] = {"force": force}
    for name in _user_targets():
        if any(i.user is not None for i in items) and \
                (where := get(name).checkpoint_identity(cp)) is not None:
            api[name] = where
            options[name] = _target_options(cp, chosen, name)
    return Plan(
        kind="revert", api=api, source={"checkpoint": str(cp.path), "runs": chosen},
        options=options, items=tuple(items), skipped=tuple(skipped),
        created_at=utcnow().isoformat(),
    )


def _user_targets() -> list[str]:
    """Targets that received corrections as data for a user (they keep what they got; a
    revert sends the earlier values the same way)."""
    return [name for name in TARGETS if get(name).needs_users]


def _recipients(cp: Checkpoint, runs: Sequence[str], reverted: Mapping[str, Any]
                     ) -> tuple[dict[str, dict[str, Any]], list[Skipped]]:
    """The user of each reverted event, and deliveries with nothing to restore."""
    from pipeline.planfile import Skipped

    users: dict[str, dict[str, Any]] = {}
    skipped: list[Skipped] = []
    delivered = [(name, d) for name in _user_targets()
                 for d in get(name).undo_recipients(cp, runs)]
    for name, d in delivered:
        h = reverted.get(d.event_id or "")
        if h is not None and h.before is not None:
            users.setdefault(h.event_id, d.user)
            continue
        skipped.append(Skipped(
            CANNOT_REVERT, "mParticle keeps every event it accepted and no earlier value of "
            "this correction was ever read (the run did not change the event in Usermaven "
            "after looking it up), so there is nothing to send back",
            event_id=d.event_id, target=name))
    return users, skipped


def _target_options(cp: Checkpoint, runs: Sequence[str], name: str) -> dict[str, Any]:
    """The options the reverted runs delivered to target `name` with (mode, event name, …)."""
    marks = ",".join("?" * len(runs))
    for (text,) in cp.db.execute(
            f"SELECT options FROM runs WHERE run_id IN ({marks}) ORDER BY rowid DESC", (*runs,)):
        mp = (json.loads(text or "{}") or {}).get(name)
        if mp:
            return {k: v for k, v in mp.items() if k in ("mode", "event_name", "environment")}
    return {}


def _restored(before: Mapping[str, Any], changes: Iterable[tuple[Mapping[str, Any], str]]
              ) -> dict[str, Any]:
    """What mParticle gets back: every attribute the runs wrote, with its earlier value
    (null where the event did not have it)."""
    touched: set[str] = set()
    for attrs, mode in changes:
        touched |= set(attrs) | (set(before) if mode == "replace" else set())
    return {k: before.get(k) for k in sorted(touched)}


def run_history(cp: Checkpoint, limit: int = 10) -> list[dict[str, Any]]:
    """The latest runs, newest first, with how many mutations each applied (what a revert
    of it would restore)."""
    states = ",".join("?" * len(_APPLIED))
    cur = cp.db.execute(
        "SELECT r.run_id, r.command, r.started_at, r.exit_code, r.sheet, "
        f"(SELECT COUNT(*) FROM mutations m WHERE m.run_id = r.run_id AND m.status IN ({states}))"
        " AS applied FROM runs r ORDER BY r.started_at DESC, r.rowid DESC LIMIT ?",
        (*_APPLIED, limit),
    )
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur]


def _histories(cp: Checkpoint, runs: Sequence[str]) -> list[_EventHistory]:
    """Applied mutations of `runs`, grouped per event in the order they were applied."""
    marks = ",".join("?" * len(runs))
    states = ",".join("?" * len(_APPLIED))
    cur = cp.db.execute(
        "SELECT m.event_id, m.timestamp, m.attributes_before, m.attributes_after, "
        "m.merge_mode, m.run_id, r.event_type, r.lookup_key, r.lookup_value, r.row_number "
        "FROM mutations m LEFT JOIN rows r ON r.row_key = m.row_key "
        f"WHERE m.run_id IN ({marks}) AND m.status IN ({states}) "
        "ORDER BY m.applied_at, m.rowid",
        (*runs, *_APPLIED),
    )
    by_event: dict[str, _EventHistory] = {}
    for (event_id, ts, before, after, mode, run_id, etype, lkey, lvalue, number) in cur:
        h = by_event.get(event_id)
        if h is None:
            h = by_event[event_id] = _EventHistory(
                event_id, ts, etype, lkey, lvalue, number,
                None if before is None else json.loads(before))
        h.changes.append((json.loads(after), mode))
        h.runs.add(run_id)
    return list(by_event.values())


def _fold(before: Mapping[str, Any], changes: Iterable[tuple[Mapping[str, Any], str]]
          ) -> dict[str, Any]:
    """The attributes an event holds after `changes` were applied to `before`, in order."""
    state = dict(before)
    for attrs, mode in changes:
        state = dict(attrs) if mode == "replace" else {**state, **attrs}
    return state


def _revert_key(event_id: str, restore: Mapping[str, Any], left: Mapping[str, Any],
                runs: Sequence[str]) -> str:
    hexdigest = digest("revert", event_id.lower(), canonical_json(restore),
                       canonical_json(left), canonical_json(list(runs)))
    return (KEY_PREFIX + hexdigest)[:MAX_KEY_LENGTH]
