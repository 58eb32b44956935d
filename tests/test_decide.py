"""`decide` as a pure function: what a row's events get (key, status, note) follows from the
row's content, the events' state and what is already held, never from position, order of
unrelated rows, or the way the memory was built; and the runner's `Decider` shell agrees."""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import read_report, write_csv
from crafted import crafted_sandbox, eid, event, order_row, run_apply
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.checkpoint import Checkpoint
from pipeline.decide import (
    Decider,
    Decision,
    KeyOwner,
    Memory,
    change_of,
    decide,
    hold,
    nobody,
)
from pipeline.guards import Guard
from pipeline.keys import canonical_json, row_key
from pipeline.model import Correction, Status
from pipeline.run_types import EventTarget, RunOptions

WHEN = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
EVENTS = [f"evt-{n}" for n in range(4)]


def row(n: int, attrs: Mapping[str, Any], *, mode: str = "merge", key: str | None = None,
        tag: str = "", guard: Guard | None = None, exact: bool = False) -> Correction:
    """A lookup row; its row key is its content (plus `tag`, standing for other cells)."""
    content = {"attributes": dict(attrs), "mode": mode, "key": key, "tag": tag}
    return Correction(row_number=n, row_key=row_key(content), attributes=dict(attrs),
                      merge_mode=mode, event_type="order_completed", lookup_key="order_id",
                      lookup_value="ORD-1", idempotency_key=key, guard=guard, exact_key=exact)


def target(event_id: str, before: Mapping[str, Any] | None = None) -> EventTarget:
    return EventTarget(event_id, WHEN, before)


Step = tuple[Correction, list[EventTarget]]


def run(steps: Sequence[Step], memory: Memory | None = None,
        held: Callable[[str], KeyOwner | None] = nobody, *,
        shared: Callable[[str], bool] | None = None, namespace: str = "",
        plan_only: bool = False) -> tuple[list[Decision], Memory]:
    """Decide rows in order, folding each decision into a fresh (unbounded) memory."""
    memory = memory or Memory()
    decisions = []
    for c, targets in steps:
        d = decide(c, targets, memory, held, namespace=namespace, plan_only=plan_only,
                   **({"shared_explicit": shared} if shared else {}))
        decisions.append(d)
        memory = memory.folded(d.updates)
    return decisions, memory


def keys(decisions: Sequence[Decision]) -> list[str]:
    return [i.idempotency_key for d in decisions for i in d.items]


def statuses(decisions: Sequence[Decision]) -> list[Status]:
    return [i.status for d in decisions for i in d.items]


def sharing(steps: Sequence[Step]) -> Callable[[str], bool]:
    """What `ExplicitKeys` learns from a sheet: keys named by more than one distinct row."""
    rows: dict[str, set[str]] = {}
    for c, _ in steps:
        if c.idempotency_key is not None:
            rows.setdefault(c.idempotency_key, set()).add(c.row_key)
    return lambda k: len(rows.get(k, ())) > 1


# -- guards ----------------------------------------------------------------------------------


def test_a_guard_that_does_not_hold_is_drifted_and_not_folded_into_memory():
    """An event that no longer holds what the guard expects is `drifted`, says what differs,
    and later rows still see the event as it is (the change is not assumed to have landed)."""
    guarded = row(1, {"price": 7}, guard=Guard({"price": 5}))
    (drifted,), memory = run([(guarded, [target("evt-0", {"price": 6})])])
    item = drifted.items[0]
    assert item.status is Status.DRIFTED
    assert item.note is not None and "price: expected 5, found 6" in item.note
    assert drifted.updates.states == drifted.updates.changes == drifted.updates.owners == ()
    later = decide(row(2, {"price": 6}), [target("evt-0", {"price": 6})], memory)
    assert later.items[0].status is Status.UNCHANGED


def test_a_whole_state_guard_drifts_on_a_state_folded_from_an_earlier_row():
    """A guard is checked against the state earlier rows of the run leave, not the stale
    looked-up one: a plan item guarded by the old state drifts after a row changed it."""
    first = row(1, {"price": 6})
    plan_item = row(2, {"price": 9}, guard=Guard({"price": 5}, whole=True), tag="plan")
    decisions, _ = run([(first, [target("evt-0", {"price": 5})]),
                        (plan_item, [target("evt-0", {"price": 5})])])
    assert statuses(decisions) == [Status.PENDING, Status.DRIFTED]


# -- duplicates ------------------------------------------------------------------------------


def _holder(c: Correction, event_id: str, *, landed: bool) -> KeyOwner:
    return KeyOwner("another-row", event_id, None, change_of(c.attributes, c.merge_mode),
                    landed=landed)


def test_an_earlier_holder_whose_change_did_not_land_does_not_make_a_duplicate():
    """A key held by an earlier run's failed (refused, unfound) mutation of the same change is
    sent again, under the same key: the API applies it at most once."""
    c = row(1, {"price": 7})
    key = decide(c, [target("evt-0")], Memory()).items[0].idempotency_key
    held = {key: _holder(c, "evt-0", landed=False)}.get
    item = decide(c, [target("evt-0")], Memory(), held).items[0]
    assert (item.status, item.idempotency_key) == (Status.PENDING, key)


def test_an_earlier_holder_whose_change_landed_makes_a_duplicate():
    """The same change to the same event, landed in an earlier run, is not sent again."""
    c = row(1, {"price": 7})
    key = decide(c, [target("evt-0")], Memory()).items[0].idempotency_key
    held = {key: _holder(c, "evt-0", landed=True)}.get
    item = decide(c, [target("evt-0")], Memory(), held).items[0]
    assert item.status is Status.DUPLICATE
    assert item.note is not None and "earlier sheet" in item.note


def test_a_change_an_earlier_run_applied_but_the_event_no_longer_holds_is_a_redo():
    """A landed earlier holder of the key, and an event seen in another state: the row is
    sent under a key of its own, the same one on every call; seen holding the change it is
    `unchanged`; not seen at all (no lookup) it stays a duplicate."""
    c = row(1, {"price": 7})
    key = decide(c, [target("evt-0")], Memory()).items[0].idempotency_key
    held = {key: _holder(c, "evt-0", landed=True)}.get
    moved_on = [decide(c, [target("evt-0", {"price": 8})], Memory(), held).items[0]
                for _ in range(2)]
    assert [i.status for i in moved_on] == [Status.PENDING] * 2
    assert moved_on[0].idempotency_key == moved_on[1].idempotency_key != key
    holding = decide(c, [target("evt-0", {"price": 7})], Memory(), held).items[0]
    assert holding.status is Status.UNCHANGED
    unseen = decide(c, [target("evt-0")], Memory(), held).items[0]
    assert unseen.status is Status.DUPLICATE


def test_a_later_row_sees_the_event_as_a_resumed_intent_will_leave_it():
    """A1 applied in an earlier run, B resumed (to be sent in this run), then A2: the lookup
    still shows A, but B lands first, so A2 is a redo under a key of its own, not
    `unchanged`."""
    a1, b, a2 = row(1, {"price": 7}), row(2, {"price": 8}), row(3, {"price": 7}, tag="again")
    a_key = decide(a1, [target("evt-0")], Memory()).items[0].idempotency_key
    held = {a_key: _holder(a1, "evt-0", landed=True)}.get
    b_intent = decide(b, [target("evt-0", {"price": 7})], Memory()).items[0]
    memory = Memory().folded(hold(b, [b_intent], Memory()))
    item = decide(a2, [target("evt-0", {"price": 7})], memory, held).items[0]
    assert item.status is Status.PENDING
    assert item.idempotency_key not in (a_key, b_intent.idempotency_key)


def test_a_row_of_this_run_being_sent_makes_a_later_identical_change_a_duplicate():
    """A later row with the same change to the same event names the row already sending it."""
    decisions, _ = run([(row(3, {"price": 7}), [target("evt-0")]),
                        (row(8, {"price": 7}, tag="edited"), [target("evt-0")])])
    assert statuses(decisions) == [Status.PENDING, Status.DUPLICATE]
    assert decisions[1].items[0].note == "same change to this event as row 3; not sent again"
    assert len(set(keys(decisions))) == 1


def test_a_resumed_intent_holds_its_key_but_a_finished_one_does_not():
    """`hold` makes a resumed pending (or failed) intent the owner of its key; an applied one
    is the checkpoint's business, not this run's memory."""
    first = row(1, {"price": 7})
    (d,), _ = run([(first, [target("evt-0")])])
    pending = d.items[0]
    memory = Memory().folded(hold(first, [pending], Memory()))
    later = decide(row(2, {"price": 7}, tag="copy"), [target("evt-0")], memory)
    assert later.items[0].status is Status.DUPLICATE
    from dataclasses import replace
    assert hold(first, [replace(pending, status=Status.APPLIED)], Memory()).owners == ()


# -- type-strict no-op -----------------------------------------------------------------------


@pytest.mark.parametrize("held, asked", [
    (1, "1"), ("1", 1), (1, 1.0), (1.0, 1), (True, 1), (1, True), (False, 0), (None, 0),
    ({"a": 1}, {"a": True}), ([1, 2], [1.0, 2]), ({"a": [True]}, {"a": [1]}),
    ({"a": {"b": None}}, {"a": {}}), ([[1]], [["1"]]),
])
@pytest.mark.parametrize("mode", ["merge", "replace"])
def test_a_value_of_another_json_type_at_any_depth_is_a_change(held, asked, mode):
    """Equal in Python is not enough: `1`/`"1"`, `1`/`1.0`, `true`/`1`, nested ones too, are
    changes to send, and the plan note names the type change at the top level."""
    item = decide(row(1, {"x": asked}, mode=mode), [target("evt-0", {"x": held})],
                  Memory()).items[0]
    assert item.status is Status.PENDING


def test_null_is_not_the_same_as_a_missing_attribute():
    """Setting `x: null` on an event without `x` is a change, and so is replacing `{x: null}`
    by `{}`."""
    merge = decide(row(1, {"x": None}), [target("evt-0", {})], Memory()).items[0]
    replace = decide(row(1, {}, mode="replace"), [target("evt-0", {"x": None})],
                     Memory()).items[0]
    assert merge.status is replace.status is Status.PENDING


scalars = (st.none() | st.booleans() | st.integers(-10**6, 10**6)
           | st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f + 0.0)
           | st.text(max_size=4))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=10)


@settings(max_examples=150, deadline=None)
@given(json_values, json_values, st.sampled_from(["merge", "replace"]))
def test_a_row_is_unchanged_exactly_when_the_event_holds_the_same_json(held, asked, mode):
    """`unchanged` iff the value is the same JSON text (type and value at every depth); the
    event's own value, copied, is always `unchanged`."""
    before = {"x": held, "other": 1} if mode == "merge" else {"x": held}
    item = decide(row(1, {"x": asked}, mode=mode), [target("evt-0", before)], Memory()).items[0]
    same = canonical_json(held) == canonical_json(asked)
    assert (item.status is Status.UNCHANGED) == same
    copied = decide(row(1, {"x": copy.deepcopy(held)}, mode=mode),
                    [target("evt-0", before)], Memory()).items[0]
    assert copied.status is Status.UNCHANGED


# -- undone and redone -----------------------------------------------------------------------


def _flips(n: int) -> list[Step]:
    """A, B, A, B, … on one event, each row telling the next from its other cells."""
    return [(row(i + 1, {"price": 5 if i % 2 == 0 else 6}, tag=f"r{i}"), [target("evt-0")])
            for i in range(n)]


def test_a_change_undone_and_redone_gets_a_key_of_its_own():
    """A → B → A on one event: three sends under three keys, and a rerun gives the same."""
    decisions, _ = run(_flips(3))
    first = keys(decisions)
    assert statuses(decisions) == [Status.PENDING] * 3
    assert len(set(first)) == 3
    assert keys(run(_flips(3))[0]) == first


def test_a_change_flipped_back_and_forth_gets_a_new_key_every_time():
    """A → B → A → B → A: every application is sent under a key no other row of the run
    holds, or the API would replay an earlier answer and leave the event at B."""
    decisions, _ = run(_flips(7))
    assert statuses(decisions) == [Status.PENDING] * 7
    assert len(set(keys(decisions))) == 7
    assert keys(run(_flips(7))[0]) == keys(decisions)


def test_a_sheet_flipping_one_event_back_and_forth_ends_where_its_last_row_says(tmp_path):
    """Through the API: five rows A, B, A, B, A on one event are each applied under a key of
    its own, and the event ends at A (no row replays an earlier answer)."""
    rows = [order_row("ORD-1", price, from_timestamp=f"2026-03-0{n + 1}",
                      to_timestamp="2026-03-29")
            for n, price in enumerate(["5.00", "6.00", "5.00", "6.00", "5.00"])]
    with crafted_sandbox([event(1, {"order_id": "ORD-1", "final_price": "4.00"})]) as sb:
        out = run_apply(sb.url, write_csv(tmp_path / "s.csv", rows), tmp_path)
        final = sb.store.get(eid(1)).attributes["final_price"]
    lines = read_report(out.report)
    assert [r["status"] for r in lines] == ["applied"] * 5
    assert len({r["idempotency_key"] for r in lines}) == 5
    assert final == "5.00"


def test_the_same_change_twice_in_a_row_is_unchanged_not_redone():
    """A → A on one event known to the run: the second is a no-op, not a new application."""
    decisions, _ = run([(row(1, {"price": 5}), [target("evt-0", {"price": 4})]),
                        (row(2, {"price": 5}, tag="again"), [target("evt-0", {"price": 4})])])
    assert statuses(decisions) == [Status.PENDING, Status.UNCHANGED]


# -- keys depend only on content -------------------------------------------------------------

attr_names = st.sampled_from(["price", "currency", "coupon", "qty"])
attr_sets = st.dictionaries(attr_names, scalars, min_size=1, max_size=3)
explicit = st.none() | st.sampled_from(["fix-1", "fix-2", "fix-3"])


@st.composite
def sheets(draw: st.DrawFn) -> list[Step]:
    """Rows over a few events; explicit keys sometimes, shared between rows sometimes."""
    steps = []
    for n in range(draw(st.integers(1, 6))):
        event = draw(st.sampled_from(EVENTS))
        c = row(n + 2, draw(attr_sets), mode=draw(st.sampled_from(["merge", "replace"])),
                key=draw(explicit), tag=f"line-{n}")
        before = draw(st.none() | st.just({"price": 1}))
        steps.append((c, [target(event, before)]))
    return steps


def _frozen(memory: Memory) -> str:
    return json.dumps([dict(memory.states), dict(memory.changes),
                       {k: vars(v) for k, v in memory.owners.items()}], sort_keys=True)


@settings(max_examples=100, deadline=None)
@given(sheets())
def test_the_same_inputs_give_the_same_items_and_leave_the_inputs_alone(steps):
    """Deciding twice from one memory, or from fresh memories built the same way, gives equal
    decisions; the memory and the rows are not changed by being read."""
    shared = sharing(steps)
    once, memory = run(steps, shared=shared)
    again, memory_again = run(steps, shared=shared)
    assert once == again
    assert _frozen(memory) == _frozen(memory_again)
    seen = _frozen(memory)
    attrs = [copy.deepcopy(dict(c.attributes)) for c, _ in steps]
    last, targets = steps[-1]
    assert decide(last, targets, memory, shared_explicit=shared) == decide(
        last, targets, memory, shared_explicit=shared)
    assert _frozen(memory) == seen
    assert [dict(c.attributes) for c, _ in steps] == attrs


@settings(max_examples=150, deadline=None)
@given(attr_sets, st.sampled_from(EVENTS), st.sampled_from(["merge", "replace"]),
       st.text(max_size=5), explicit, st.integers(1, 10**6), st.text(min_size=1, max_size=8))
def test_a_key_depends_on_the_change_not_on_where_the_row_is(attrs, event, mode, namespace,
                                                            key, number, tag):
    """Row number, row key (other cells) and the order of attributes within the row do not
    change a row's key; namespace, event, attributes and merge mode do."""
    def key_of(c: Correction, ns: str = namespace, ev: str = event) -> str:
        return decide(c, [target(ev)], Memory(), namespace=ns).items[0].idempotency_key

    base = key_of(row(1, attrs, mode=mode, key=key))
    reordered = dict(reversed(list(attrs.items())))
    assert key_of(row(number, reordered, mode=mode, key=key, tag=tag)) == base
    if key is None:
        other_mode = "replace" if mode == "merge" else "merge"
        assert key_of(row(1, attrs, mode=other_mode)) != base
        assert key_of(row(1, {**attrs, "extra": 1}, mode=mode)) != base
        assert key_of(row(1, attrs, mode=mode), ns=namespace + "x") != base
        assert key_of(row(1, attrs, mode=mode), ev=event + "x") != base
    else:
        assert base == key  # one row, one event: the sheet's key, bare


def _keys_by_row(steps: Sequence[Step]) -> dict[str, list[str]]:
    decisions, _ = run(steps, shared=sharing(steps))
    return {c.row_key: [i.idempotency_key for i in d.items]
            for (c, _), d in zip(steps, decisions, strict=True)}


@settings(max_examples=100, deadline=None)
@given(sheets(), st.randoms(use_true_random=False))
def test_keys_do_not_depend_on_the_order_of_rows_for_other_events(steps, rnd):
    """Shuffling the sheet while keeping each event's own rows in order gives every row the
    same key, explicit keys (shared or not) included."""
    lanes: dict[str, list[Step]] = {}
    for s in steps:
        lanes.setdefault(s[1][0].event_id, []).append(s)
    order = [e for e, lane in lanes.items() for _ in lane]
    rnd.shuffle(order)
    shuffled = [lanes[e].pop(0) for e in [*order]]
    assert _keys_by_row(shuffled) == _keys_by_row(steps)


@settings(max_examples=60, deadline=None)
@given(st.permutations(range(5)))
def test_an_explicit_key_several_rows_share_gets_one_key_per_event_and_change_in_any_order(
        order):
    """A key named by several rows is suffixed per (event, change) for all of them, so the
    keys (and their uniqueness across events) are the same in every row order."""
    rows = [(row(1, {"price": 1}, key="fix-s"), [target("evt-0")]),
            (row(2, {"price": 2}, key="fix-s"), [target("evt-1")]),
            (row(3, {"price": 3}, key="fix-alone"), [target("evt-2")]),
            (row(4, {"price": 4}, key="fix-t"), [target("evt-3")]),
            (row(5, {"price": 5}, key="fix-t"), [target("evt-3")])]
    by_row = _keys_by_row([rows[i] for i in order])
    assert by_row == _keys_by_row(rows)
    flat = [k for ks in by_row.values() for k in ks]
    assert len(set(flat)) == 5 and "fix-alone" in flat
    assert all(k.startswith(("fix-s-", "fix-t-")) for k in flat if k != "fix-alone")


# -- the runner's shell ----------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(sheets(), st.booleans())
def test_the_decider_gives_what_the_pure_function_gives(steps, plan_only):
    """The checkpoint-backed `Decider` (real SQLite, bounded memories) decides every row as
    `decide` folded over the same rows does, with the checkpoint's holders as `held`."""
    with tempfile.TemporaryDirectory() as tmp:
        cp = Checkpoint(Path(tmp) / "cp.sqlite")
        try:
            earlier = Decider(cp, RunOptions(key_namespace="ns"))
            done = earlier.decide(*steps[0])
            cp.record_intents([i.__class__(**{**vars(i), "status": Status.APPLIED})
                               for i in done], "run-1")
            decider = Decider(cp, RunOptions(key_namespace="ns", plan_only=plan_only))
            shell = [decider.decide(c, t) for c, t in steps]
            pure, _ = run(steps, held=decider.held, namespace="ns", plan_only=plan_only)
        finally:
            cp.close()
    assert shell == [list(d.items) for d in pure]
    assert shell[0][0].idempotency_key == done[0].idempotency_key  # same row, same key
