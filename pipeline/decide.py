"""Deciding what each event gets: its idempotency key, and whether anything needs sending
(no-op, duplicate, drifted), with the notes a reader needs.

`decide` is a pure, synchronous function of (correction, the events found with their
before-state, what this run already decided, who held which key in earlier runs): no I/O, no
clock, no globals, and it never changes its inputs. It returns the items and the updates to
this run's memory instead of applying them. That is what lets a plan, a preview or an undo
ask the same question without a network, a checkpoint or a run, and what makes the rules
testable one by one: same inputs, same items, wherever it is called from.

`Decider` is the thin stateful shell the runner calls in sheet order (`decide` for freshly
resolved rows, `hold_resumed` for intents an earlier run committed): it answers the lookups
from the checkpoint, keeps the memories bounded (flat memory on any sheet) and applies the
updates, so later rows see earlier rows' changes and keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pipeline.checkpoint import Checkpoint, Intent
from pipeline.explicit_keys import ExplicitKeys
from pipeline.jsontypes import holds, type_changes
from pipeline.keys import canonical_json, idempotency_key, per_event_key
from pipeline.model import Correction, Status
from pipeline.run_types import LRU, MEMORY_ENTRIES, EventTarget, RunOptions, after_state
from pipeline.timeutil import format_api

#: Intent states a run (re)sends; everything else is final.
RESEND = frozenset({Status.PENDING, Status.FAILED})

#: A key held by a mutation in one of these states carries a change that landed: a later row
#: with the same change is a duplicate. A failed, pending, refused or unfound holder is not.
LANDED = frozenset({Status.APPLIED, Status.UNCHANGED, Status.VERIFIED, Status.MISMATCH})

#: How `plan` marks an `event_id` row: nothing was looked up, so nothing is known of it.
NOT_CHECKED = "not checked (no lookup)"


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class KeyOwner:
    """The row holding an idempotency key, and the change it carries under it."""

    row_key: str
    event_id: str
    row_number: int | None  # None: a row of an earlier run
    change: str
    landed: bool = True  # this run's holders are being sent now


#: How often one change may be redone on one event before the chain of keys stops growing
#: (a bound for safety, not a limit anyone meets).
_MAX_REDOS = 1000

#: Who held a key in earlier runs (the checkpoint, for the runner; a dict's `get` in tests).
Held = Callable[[str], KeyOwner | None]
#: Whether more than one distinct row of the sheet names an explicit key.
Shared = Callable[[str], bool]


def nobody(_key: str) -> KeyOwner | None:
    """`held` for a run with no history (a fresh checkpoint, a preview)."""
    return None


def unshared(_key: str) -> bool:
    """`shared_explicit` for a sheet whose explicit keys were not learned."""
    return False


@dataclass(frozen=True)
class Memory:
    """What this run already decided, read-only: each event's state after this run's rows
    (None: not known), each event's latest change, and the keys this run's rows hold."""

    states: Mapping[str, Mapping[str, Any] | None] = field(default_factory=_empty)
    changes: Mapping[str, str] = field(default_factory=_empty)
    owners: Mapping[str, KeyOwner] = field(default_factory=_empty)

    def folded(self, updates: Updates) -> Memory:
        """A new memory with `updates` applied (unbounded; the runner's shell bounds its own)."""
        return Memory(MappingProxyType({**self.states, **dict(updates.states)}),
                      MappingProxyType({**self.changes, **dict(updates.changes)}),
                      MappingProxyType({**self.owners, **dict(updates.owners)}))


@dataclass(frozen=True)
class Updates:
    """What one decision adds to the run's memory, in the order it was learned."""

    states: tuple[tuple[str, dict[str, Any] | None], ...] = ()
    changes: tuple[tuple[str, str], ...] = ()
    owners: tuple[tuple[str, KeyOwner], ...] = ()


@dataclass(frozen=True)
class Decision:
    """The items one correction gives (one per event) and what the run must remember."""

    items: tuple[Intent, ...]
    updates: Updates = field(default_factory=Updates)


def change_of(attributes: Mapping[str, Any] | str, merge_mode: str) -> str:
    """One text per distinct change (attributes + merge mode), for comparing key owners."""
    attrs = json.loads(attributes) if isinstance(attributes, str) else attributes
    return canonical_json([attrs, merge_mode])


class _View:
    """The run's memory with this decision's own updates laid over it (read in, never out)."""

    def __init__(self, memory: Memory, held: Held) -> None:
        self.memory = memory
        self.held = held
        self.states: dict[str, dict[str, Any] | None] = {}
        self.changes: dict[str, str] = {}
        self.owners: dict[str, KeyOwner] = {}

    def state(self, event_id: str, default: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        if event_id in self.states:
            return self.states[event_id]
        return self.memory.states.get(event_id, default)

    def change(self, event_id: str) -> str | None:
        return self.changes.get(event_id, self.memory.changes.get(event_id))

    def this_run(self, key: str) -> KeyOwner | None:
        owner = self.owners.get(key)
        return owner if owner is not None else self.memory.owners.get(key)

    def owner(self, key: str) -> KeyOwner | None:
        """Who already holds a key: a row of this run, or of an earlier one."""
        owner = self.this_run(key)
        return owner if owner is not None else self.held(key)

    def hold(self, key: str, owner: KeyOwner) -> None:
        if self.this_run(key) is None:
            self.owners[key] = owner

    def updates(self) -> Updates:
        return Updates(tuple(self.states.items()), tuple(self.changes.items()),
                       tuple(self.owners.items()))


def hold(c: Correction, intents: Iterable[Intent], memory: Memory) -> Updates:
    """A resumed intent holds its key in this run: a later row with the same change to the
    same event is its duplicate, not a second send. Later rows also see the event as it will
    be once the intent is sent (its lookup may still show the state before it)."""
    view = _View(memory, nobody)
    for i in intents:
        if i.status in RESEND:
            change = change_of(i.attributes_after, i.merge_mode)
            view.hold(i.idempotency_key, KeyOwner(c.row_key, i.event_id, c.row_number, change))
            before = view.state(i.event_id, i.attributes_before)
            view.states[i.event_id] = after_state(before, i.attributes_after, i.merge_mode)
            view.changes[i.event_id] = change
    return view.updates()


def decide(c: Correction, events: Sequence[EventTarget], memory: Memory, held: Held = nobody,
           *, namespace: str = "", plan_only: bool = False,
           shared_explicit: Shared = unshared) -> Decision:
    """Keys and no-op checks for one correction, given what earlier rows decided."""
    view = _View(memory, held)
    items: list[Intent] = []
    attrs = dict(c.attributes)
    change = change_of(attrs, c.merge_mode)
    for seq, t in enumerate(events):
        key = (c.idempotency_key if c.exact_key and c.idempotency_key
               else _key_for(view, c, t.event_id, len(events), namespace, shared_explicit))
        last = view.change(t.event_id)
        before = view.state(t.event_id, t.before)
        status = Status.PLANNED if plan_only else Status.PENDING
        note = None
        drift = (c.guard.drift(before) if c.guard is not None and before is not None
                 and not holds(before, attrs, c.merge_mode) else None)
        if drift is not None:
            # the event is not what the reviewer (or the sheet's expect.*) saw: untouched,
            # and later rows do not assume this change landed
            items.append(Intent(
                row_key=c.row_key, event_id=t.event_id, idempotency_key=key,
                timestamp=format_api(t.timestamp), merge_mode=c.merge_mode,
                attributes_after=attrs, attributes_before=before, status=Status.DRIFTED,
                seq=seq, note=drift))
            continue
        if before is not None and holds(before, attrs, c.merge_mode):
            status = Status.UNCHANGED
        elif c.exact_key:
            note = _duplicate_of(view, key, c, t.event_id, change)
            status = Status.DUPLICATE if note is not None else status
        elif last is not None and last != change and _repeats(view, key, c, t.event_id, change):
            # A → B → A: the second A is a new application, so it needs a key of its own
            # (the first A's key would only replay the first answer); A → B → A → B → A: the
            # third A's must differ from the second's as well, so walk on until a free one
            while True:
                key = per_event_key(key, f"{t.event_id}|after|{last}")
                if not _repeats(view, key, c, t.event_id, change):
                    break
        elif (note := _duplicate_of(view, key, c, t.event_id, change)) is not None:
            if before is not None and _from_earlier_run(view, key):
                # the event no longer holds what an earlier sheet applied under this key:
                # it was changed since (A → B → A across sheets), so this is a redo, sent
                # under a key of its own (the old one would only replay the old answer)
                key = _redo_key(view, key, c, t.event_id, change, canonical_json(before))
                note = None
            else:
                status = Status.DUPLICATE
        if status in (Status.PLANNED, Status.PENDING):
            note = _plan_note(c, t, before, attrs, plan_only)
        view.states[t.event_id] = after_state(before, attrs, c.merge_mode)
        view.changes[t.event_id] = change
        view.hold(key, KeyOwner(c.row_key, t.event_id, c.row_number, change))
        items.append(Intent(
            row_key=c.row_key, event_id=t.event_id, idempotency_key=key,
            timestamp=format_api(t.timestamp), merge_mode=c.merge_mode,
            attributes_after=attrs, attributes_before=t.before, status=status, seq=seq,
            note=note,
        ))
    return Decision(tuple(items), view.updates())


def _key_for(view: _View, c: Correction, event_id: str, n_events: int, namespace: str,
             shared: Shared) -> str:
    """Derived keys as DESIGN §4; an explicit key is kept unless it would be reused.

    Reused for another event, or for another change of the same event, it gets a
    deterministic per-event (per-change) suffix, so the API never answers 409 for it and
    never replays an answer that belongs to a different change.
    """
    if c.idempotency_key is None:
        return idempotency_key(namespace, event_id, c.attributes, c.merge_mode)
    key = c.idempotency_key
    change = change_of(c.attributes, c.merge_mode)
    if shared(key):
        # several rows name it: suffixed for every one of them, whatever their order --
        # unless an earlier run already sent this very change to this event under the bare
        # key (a row edited or copied since): the same change keeps its key
        owner = view.owner(key)
        if owner is not None and owner.event_id == event_id and owner.change == change:
            return key
        return per_event_key(key, f"{event_id}|{change}")
    if n_events > 1:
        return per_event_key(key, event_id)
    owner = view.owner(key)
    if owner is None or owner.row_key == c.row_key:
        return key
    if owner.event_id != event_id:
        return per_event_key(key, event_id)
    if owner.change != change:
        return per_event_key(key, f"{event_id}|{change}")
    return key


def _repeats(view: _View, key: str, c: Correction, event_id: str, change: str) -> bool:
    """True when an earlier row of this run sent this very change to this event."""
    owner = view.this_run(key)
    return (owner is not None and owner.row_key != c.row_key and owner.event_id == event_id
            and owner.change == change)


def _from_earlier_run(view: _View, key: str) -> bool:
    owner = view.owner(key)
    return owner is not None and owner.row_number is None


def _redo_key(view: _View, key: str, c: Correction, event_id: str, change: str,
              before: str) -> str:
    """The first key along the redo chain that no landed holder of this change has: the same
    on every rerun, since it depends on the key and the state the event is in now."""
    for _ in range(_MAX_REDOS):
        key = per_event_key(key, f"{event_id}|after|{before}")
        owner = view.owner(key)
        if (owner is None or owner.row_key == c.row_key or not owner.landed
                or owner.event_id != event_id or owner.change != change):
            break
    return key


def _duplicate_of(view: _View, key: str, c: Correction, event_id: str,
                  change: str) -> str | None:
    """If another row already sends this exact change to this event, say which.

    Only a holder whose change landed (or that this run is sending) counts: a row edited
    after it failed, was refused or met a 404/409 is a new correction and is sent, under
    the same key when the change is the same (the API applies it at most once).
    """
    owner = view.owner(key)
    if (owner is None or owner.row_key == c.row_key or owner.event_id != event_id
            or owner.change != change or not owner.landed):
        return None
    if owner.row_number is None:
        return "same change to this event as a row of an earlier sheet; not sent again"
    return f"same change to this event as row {owner.row_number}; not sent again"


def _plan_note(c: Correction, t: EventTarget, before: Mapping[str, Any] | None,
               attrs: Mapping[str, Any], plan_only: bool) -> str | None:
    """What a reader of the plan (or report) must know about a change about to be sent."""
    parts = []
    if plan_only and c.event_id is not None and t.before is None:
        parts.append(f"{NOT_CHECKED}: the event's existence and values were not looked up")
    if changes := type_changes(before, attrs):
        parts.append("type changes: " + "; ".join(changes))
    return "; ".join(parts) or None


class Decider:
    """The stateful shell around `decide` for one run: the checkpoint answers for keys of
    earlier runs (and for anything the bounded memories evicted), and each decision's
    updates are applied in sheet order."""

    def __init__(self, checkpoint: Checkpoint, options: RunOptions) -> None:
        self.cp = checkpoint
        self.opts = options
        self._states: LRU[str, dict[str, Any] | None] = LRU(MEMORY_ENTRIES)
        self._keys_this_run: LRU[str, KeyOwner] = LRU(MEMORY_ENTRIES)
        self._last_change: LRU[str, str] = LRU(MEMORY_ENTRIES)  # event -> its latest change
        # read-only views: `decide` sees the live memories and cannot write to them
        self._memory = Memory(MappingProxyType(self._states),
                              MappingProxyType(self._last_change),
                              MappingProxyType(self._keys_this_run))
        #: explicit keys several rows share (learned from the whole sheet before the run)
        self.explicit_keys = ExplicitKeys(checkpoint.db)

    def hold_resumed(self, c: Correction, intents: list[Intent]) -> None:
        """Resumed intents hold their keys in this run (see `hold`)."""
        self._apply(hold(c, intents, self._memory))

    def decide(self, c: Correction, targets: list[EventTarget]) -> list[Intent]:
        """Keys and no-op checks, in sheet order, so later rows see earlier rows' changes."""
        decision = decide(c, targets, self._memory, self.held, namespace=self.opts.key_namespace,
                          plan_only=self.opts.plan_only,
                          shared_explicit=self.explicit_keys.shared)
        self._apply(decision.updates)
        return list(decision.items)

    def held(self, key: str) -> KeyOwner | None:
        """The key's holder in the checkpoint (earlier runs, or evicted from memory)."""
        found = self.cp.key_owner(key)
        if found is None:
            return None
        return KeyOwner(found[0], found[1], None, change_of(found[2], found[3]),
                        landed=found[4] in LANDED)

    def _apply(self, updates: Updates) -> None:
        for event_id, state in updates.states:
            self._states[event_id] = state
        for event_id, change in updates.changes:
            self._last_change[event_id] = change
        for key, owner in updates.owners:
            self._keys_this_run[key] = owner
