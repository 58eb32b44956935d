"""Planning the mParticle part of a run: rows → deliveries → batches, committed before sending.

Offline: each chunk of the sheet becomes deliveries (one per corrected event, or per row in
user-attributes mode) with their keys, grouped into batches whose exact bytes are committed
to the checkpoint before any request leaves. A row with nothing to send gets a placeholder
saying why (invalid, duplicate, waiting for the Usermaven lookup, ...).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pipeline.checkpoint import Checkpoint, Intent
from pipeline.keys import canonical_json, per_event_key
from pipeline.model import Correction, RowProblem, Status
from pipeline.targets.mparticle.batching import PlannedDelivery, build_batches
from pipeline.targets.mparticle.ledger import Ledger, Placeholder
from pipeline.targets.mparticle.mapping import (
    NO_TIME,
    MParticleOptions,
    Source,
    User,
    check_row,
    custom_event,
    sheet_source,
    source_message_id,
    user_attributes,
    user_attributes_key,
    user_of,
)
from pipeline.timeutil import parse_timestamp, utcnow

if TYPE_CHECKING:
    from pipeline.run_types import RunOptions
    from pipeline.targets.mparticle.deliver import MParticleResult

#: How many times one change may be redone on one event in one sheet before its later
#: repetitions count as duplicates (a bound, not a limit anyone meets).
_MAX_REDOS = 1000
#: Usermaven row outcomes that mean "no event to attach the correction to".
_UNRESOLVED = {Status.NOT_FOUND.value, Status.AMBIGUOUS.value}


def _subject(c: Correction) -> str:
    """What a row's change is about, as the sheet names it: its event, or its lookup."""
    return c.event_id or f"lookup:{c.event_type}:{c.lookup_key}={c.lookup_value}"


def _change_of(c: Correction) -> str:
    return canonical_json([dict(c.attributes), c.merge_mode])


class Planning:
    """The planning half of `Delivery` (which sets these attributes)."""

    cp: Checkpoint
    ledger: Ledger
    mp: MParticleOptions
    opts: RunOptions
    result: MParticleResult
    run_id: str
    generation: int
    usermaven: bool
    register: bool
    _met: set[str]
    _last_change: dict[str, str]  # event (or lookup) -> its latest change

    def plan(self, batches: Iterable[list[Correction | RowProblem]]) -> None:
        now = utcnow()
        status = "planned" if self.opts.plan_only else "pending"
        for items in batches:
            # a row met twice in one sheet is `duplicate`: only its first sighting is planned
            corrections = []
            for c in items:
                if isinstance(c, Correction) and c.row_key not in self._met:
                    self._met.add(c.row_key)
                    corrections.append(c)
            if self.register:
                reg = self.cp.register(items, self.generation, self.run_id)
                self.result.rows_new += reg.new
            done = self.ledger.delivered_rows([c.row_key for c in corrections])
            self.result.rows_done += len(done)
            todo = [c for c in corrections if c.row_key not in done]
            if not todo:
                for c in corrections:  # later rows redo relative to these changes
                    self._last_change[_subject(c)] = _change_of(c)
                continue
            planned, placeholders = self._plan_rows(todo, corrections)
            built, too_big = build_batches(planned, self.mp, now)
            placeholders += [Placeholder(d.row_key, "invalid", p.for_row(d.row_number))
                             for d, p in too_big]
            self.ledger.commit_plan([c.row_key for c in todo], built, placeholders,
                                    status=status, run_id=self.run_id)
            self.result.batches_planned += len(built)

    def _plan_rows(self, todo: list[Correction], in_order: list[Correction]
                   ) -> tuple[list[PlannedDelivery], list[Placeholder]]:
        """Deliveries of `todo`; `in_order` also holds the rows delivered by earlier runs,
        whose changes later rows' redo keys count from."""
        intents: dict[str, list[Intent]] = {}
        row_states: dict[str, tuple[str, str | None]] = {}
        if self.usermaven and self.mp.mode == "event":
            keys = [c.row_key for c in todo]
            intents = self.cp.intents_for(keys)
            row_states = self._row_states(keys)
        planned: list[PlannedDelivery] = []
        placeholders: list[Placeholder] = []
        owners_here: dict[str, int] = {}
        candidates: list[tuple[Correction, User | None, list[Source]]] = []
        pending = {c.row_key for c in todo}
        for c in in_order:
            if c.row_key not in pending:
                candidates.append((c, None, []))  # delivered before: its change only
                continue
            problem = check_row(c, self.mp)
            if problem is not None:
                placeholders.append(Placeholder(c.row_key, "invalid",
                                                problem.for_row(c.row_number)))
                continue
            found = user_of(c)
            assert isinstance(found, User)
            sources = self._sources(c, intents, row_states)
            if isinstance(sources, Placeholder):
                placeholders.append(sources)
                continue
            candidates.append((c, found, sources))
        smids = [source_message_id(s.correction_key) for _, _, ss in candidates for s in ss]
        owners = self.ledger.message_owners(smids)
        for c, who, sources in candidates:
            if who is None:
                self._last_change[_subject(c)] = _change_of(c)
                continue
            for seq, s in enumerate(sources):
                smid = source_message_id(s.correction_key)
                subject = s.event_id or _subject(c)
                change = _change_of(c)
                last = self._last_change.get(subject)
                self._last_change[subject] = change
                if last is not None and last != change:
                    # A → B → A: the second A is a correction of its own (as Usermaven's keys
                    # make it), not a duplicate of the first; a third A walks on again
                    s, smid = self._redo(c, s, smid, f"{subject}|after|{last}", owners,
                                         owners_here)
                owner = owners.get(smid)
                if owner is not None and owner != c.row_key:
                    placeholders.append(Placeholder(c.row_key, "duplicate",
                                                    "same correction as an earlier row"))
                    continue
                if smid in owners_here:
                    placeholders.append(Placeholder(
                        c.row_key, "duplicate", f"same correction as row {owners_here[smid]}"))
                    continue
                owners_here[smid] = c.row_number
                planned.append(self._delivery(c, who, s, seq, smid))
        return planned, placeholders

    def _redo(self, c: Correction, s: Source, smid: str, suffix: str,
              owners: dict[str, str], owners_here: dict[str, int]) -> tuple[Source, str]:
        """The first key along `s`'s chain of redo suffixes that no other row holds (the
        same on every rerun: each row meets the chain in sheet order)."""
        for _ in range(_MAX_REDOS):
            if owners.get(smid, c.row_key) == c.row_key and smid not in owners_here:
                break
            s = Source(per_event_key(s.correction_key, suffix), s.event_id, s.event_time)
            smid = source_message_id(s.correction_key)
            owners.update(self.ledger.message_owners([smid]))
        return s, smid

    def _sources(self, c: Correction, intents: dict[str, list[Intent]],
                 row_states: dict[str, tuple[str, str | None]]) -> list[Source] | Placeholder:
        """The events a row's correction is about, each with its key and original time."""
        if self.mp.mode == "user-attributes":
            return [Source(user_attributes_key(c, self.opts.key_namespace), c.event_id, None)]
        if not self.usermaven:
            source = sheet_source(c, self.opts.key_namespace)
            if source.event_time is None:
                return Placeholder(c.row_key, "invalid", NO_TIME.for_row(c.row_number))
            return [source]
        found = intents.get(c.row_key)
        if found:
            # an event whose guard failed is left alone on every target
            kept = [i for i in found if i.status is not Status.DRIFTED]
            if not kept:
                return Placeholder(c.row_key, Status.DRIFTED.value,
                                   f"usermaven guard: {found[0].note or 'the event changed'}")
            return [Source(i.idempotency_key, i.event_id, parse_timestamp(i.timestamp))
                    for i in kept]
        status, error = row_states.get(c.row_key, ("pending", None))
        if status in _UNRESOLVED:
            return Placeholder(c.row_key, status, f"usermaven lookup: {error}" if error
                               else "the Usermaven lookup found no single event")
        return Placeholder(c.row_key, "pending",
                           "waiting for the Usermaven lookup to name the event; rerun to "
                           f"deliver (usermaven status {status}"
                           + (f": {error})" if error else ")"))

    def _delivery(self, c: Correction, user: User, s: Source, seq: int,
                  smid: str) -> PlannedDelivery:
        d = PlannedDelivery(row_key=c.row_key, row_number=c.row_number,
                            event_key=s.correction_key, seq=seq, source_message_id=smid,
                            user=user, event_id=s.event_id, event_time=s.event_time)
        if self.mp.mode == "user-attributes":
            d.user_attributes = user_attributes(c)
        else:
            d.event = custom_event(c, s, self.mp)
        return d

    def _row_states(self, keys: list[str]) -> dict[str, tuple[str, str | None]]:
        out: dict[str, tuple[str, str | None]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for key, status, error in self.cp.db.execute(
                    f"SELECT row_key, status, error FROM rows WHERE row_key IN ({marks})",
                    chunk):
                out[key] = (status, error)
        return out
