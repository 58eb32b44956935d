"""The mParticle side of a revert: who received each correction, so the earlier values can
follow the same way.

mParticle keeps every event it accepted; a correction is undone there by sending the earlier
values as a new correction for the same user. Those values are known only where Usermaven
looked the event up before changing it, so a delivery without such a lookup (an mParticle-only
run, or an event Usermaven left unchanged) cannot be reverted, and says so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.checkpoint import Checkpoint
from pipeline.targets.mparticle.ledger import has_ledger


@dataclass(frozen=True)
class Delivered:
    """One accepted mParticle correction of the runs being reverted."""

    event_id: str | None
    row_key: str
    user: dict[str, Any]


def delivered(cp: Checkpoint, runs: Sequence[str]) -> list[Delivered]:
    """Accepted mParticle deliveries of `runs`, each with the user its batch named."""
    if not runs or not has_ledger(cp):
        return []
    marks = ",".join("?" * len(runs))
    out = []
    for event_id, row_key, body in cp.db.execute(
            "SELECT d.event_id, d.row_key, b.body FROM deliveries d JOIN delivery_batches b "
            "ON b.target = d.target AND b.batch_id = d.batch_id WHERE d.target = 'mparticle' "
            f"AND d.status = 'accepted' AND d.run_id IN ({marks}) ORDER BY b.ord", (*runs,)):
        batch = json.loads(body)
        out.append(Delivered(event_id, row_key, {
            "identities": dict(batch.get("user_identities") or {}),
            "mpid": None if batch.get("mpid") is None else str(batch["mpid"])}))
    return out


def identity(cp: Checkpoint) -> dict[str, Any] | None:
    """Which mParticle input the checkpoint delivered to (never its key)."""
    url = cp.meta("mparticle_url")
    if url is None:
        return None
    return {"url": url, "workspace": cp.meta("mparticle_workspace")}
