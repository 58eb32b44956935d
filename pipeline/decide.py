"""Deciding, row by row in sheet order, what each event gets: its idempotency key, and
whether anything needs sending (no-op, duplicate, drifted), with the notes a reader needs.

Pure bookkeeping over the checkpoint and bounded memories (flat memory on any sheet); no
request leaves from here. The runner calls `decide` for freshly resolved rows and
`hold_resumed` for intents an earlier run committed, always in sheet order, so later rows see
earlier rows' changes and keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
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
_LANDED = frozenset({Status.APPLIED, Status.UNCHANGED, Status.VERIFIED, Status.MISMATCH})


@dataclass(frozen=True)
class _KeyOwner:
    row_key: str
    event_id: str
    row_number: int | None  # None: a row of an earlier run
    change: str
    landed: bool = True  # this run's holders are being sent now


def _change(attributes: Mapping[str, Any] | str, merge_mode: str) -> str:
    """One text per distinct change (attributes + merge mode), for comparing key owners."""
    attrs = json.loads(attributes) if isinstance(attributes, str) else attributes
    return canonical_json([attrs, merge_mode])


#: How `plan` marks an `event_id` row: nothing was looked up, so nothing is known of it.
NOT_CHECKED = "not checked (no lookup)"


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
    """Keys and no-op checks for one run, with bounded memories: the state each event reaches
    after this run's rows (for later rows' no-op checks), who holds which key (the checkpoint
    answers for anything evicted), and each event's latest change."""

    def __init__(self, checkpoint: Checkpoint, options: RunOptions) -> None:
        self.cp = checkpoint
        self.opts = options
        self._states: LRU[str, dict[str, Any] | None] = LRU(MEMORY_ENTRIES)
        self._keys_this_run: LRU[str, _KeyOwner] = LRU(MEMORY_ENTRIES)
        self._last_change: LRU[str, str] = LRU(MEMORY_ENTRIES)  # event -> its latest change
        #: explicit keys several rows share (learned from the whole sheet before the run)
        self.explicit_keys = ExplicitKeys(checkpoint.db)

    def hold_resumed(self, c: Correction, intents: list[Intent]) -> None:
        """A resumed intent holds its key in this run: a later row with the same change to
        the same event is its duplicate, not a second send."""
        for i in intents:
            if i.status in RESEND and i.idempotency_key not in self._keys_this_run:
                self._keys_this_run[i.idempotency_key] = _KeyOwner(
                    c.row_key, i.event_id, c.row_number,
                    _change(i.attributes_after, i.merge_mode))

    def decide(self, c: Correction, targets: list[EventTarget]) -> list[Intent]:
        """Keys and no-op checks, in sheet order, so later rows see earlier rows' changes."""
        intents: list[Intent] = []
        attrs = dict(c.attributes)
        for seq, t in enumerate(targets):
            key = (c.idempotency_key if c.exact_key and c.idempotency_key
                   else self.key_for(c, t.event_id, len(targets)))
            change = _change(attrs, c.merge_mode)
            last = self._last_change.get(t.event_id)
            before = self._states.get(t.event_id, t.before)
            status = Status.PLANNED if self.opts.plan_only else Status.PENDING
            note = None
            drift = (c.guard.drift(before) if c.guard is not None and before is not None
                     and not holds(before, attrs, c.merge_mode) else None)
            if drift is not None:
                # the event is not what the reviewer (or the sheet's expect.*) saw: untouched,
                # and later rows do not assume this change landed
                intents.append(Intent(
                    row_key=c.row_key, event_id=t.event_id, idempotency_key=key,
                    timestamp=format_api(t.timestamp), merge_mode=c.merge_mode,
                    attributes_after=attrs, attributes_before=before, status=Status.DRIFTED,
                    seq=seq, note=drift))
                continue
            if before is not None and holds(before, attrs, c.merge_mode):
                status = Status.UNCHANGED
            elif c.exact_key:
                note = self.duplicate_of(key, c, t.event_id)
                status = Status.DUPLICATE if note is not None else status
            elif last is not None and last != change and self.repeats(key, c, t.event_id):
                # A → B → A: the second A is a new application, so it needs a key of its own
                # (the first A's key would only replay the first answer)
                key = per_event_key(key, f"{t.event_id}|after|{last}")
            elif (note := self.duplicate_of(key, c, t.event_id)) is not None:
                status = Status.DUPLICATE
            if status in (Status.PLANNED, Status.PENDING):
                note = _plan_note(c, t, before, attrs, self.opts.plan_only)
            self._states[t.event_id] = after_state(before, attrs, c.merge_mode)
            self._last_change[t.event_id] = change
            if key not in self._keys_this_run:
                self._keys_this_run[key] = _KeyOwner(c.row_key, t.event_id, c.row_number,
                                                     change)
            intents.append(Intent(
                row_key=c.row_key, event_id=t.event_id, idempotency_key=key,
                timestamp=format_api(t.timestamp), merge_mode=c.merge_mode,
                attributes_after=attrs, attributes_before=t.before, status=status, seq=seq,
                note=note,
            ))
        return intents

    def owner(self, key: str) -> _KeyOwner | None:
        """Who already holds an idempotency key: a row of this run, or of the checkpoint."""
        owner = self._keys_this_run.get(key)
        if owner is None and (found := self.cp.key_owner(key)) is not None:
            owner = _KeyOwner(found[0], found[1], None, _change(found[2], found[3]),
                              landed=found[4] in _LANDED)
        return owner

    def key_for(self, c: Correction, event_id: str, n_events: int) -> str:
        """Derived keys as DESIGN §4; an explicit key is kept unless it would be reused.

        Reused for another event, or for another change of the same event, it gets a
        deterministic per-event (per-change) suffix, so the API never answers 409 for it and
        never replays an answer that belongs to a different change.
        """
        if c.idempotency_key is None:
            return idempotency_key(self.opts.key_namespace, event_id, c.attributes, c.merge_mode)
        key = c.idempotency_key
        if self.explicit_keys.shared(key):
            # several rows name it: suffixed for every one of them, whatever their order --
            # unless an earlier run already sent this very change to this event under the bare
            # key (a row edited or copied since): the same change keeps its key
            change = _change(c.attributes, c.merge_mode)
            owner = self.owner(key)
            if owner is not None and owner.event_id == event_id and owner.change == change:
                return key
            return per_event_key(key, f"{event_id}|{change}")
        if n_events > 1:
            return per_event_key(key, event_id)
        owner = self.owner(key)
        if owner is None or owner.row_key == c.row_key:
            return key
        if owner.event_id != event_id:
            return per_event_key(key, event_id)
        change = _change(c.attributes, c.merge_mode)
        if owner.change != change:
            return per_event_key(key, f"{event_id}|{change}")
        return key

    def repeats(self, key: str, c: Correction, event_id: str) -> bool:
        """True when an earlier row of this run sent this very change to this event."""
        owner = self._keys_this_run.get(key)
        return (owner is not None and owner.row_key != c.row_key and owner.event_id == event_id
                and owner.change == _change(c.attributes, c.merge_mode))

    def duplicate_of(self, key: str, c: Correction, event_id: str) -> str | None:
        """If another row already sends this exact change to this event, say which.

        Only a holder whose change landed (or that this run is sending) counts: a row edited
        after it failed, was refused or met a 404/409 is a new correction and is sent, under
        the same key when the change is the same (the API applies it at most once).
        """
        owner = self.owner(key)
        if (owner is None or owner.row_key == c.row_key or owner.event_id != event_id
                or owner.change != _change(c.attributes, c.merge_mode) or not owner.landed):
            return None
        if owner.row_number is None:
            return "same change to this event as a row of an earlier sheet; not sent again"
        return f"same change to this event as row {owner.row_number}; not sent again"
