"""Saved plans: exactly what `apply --plan` will send, sealed with a digest a reviewer approves.

A plan file is one JSON document: a header (what made it, which API and workspace it was
looked up against — never the token —, the sheet's fingerprint or the runs it reverts, the
options) and its items, one per (event, change): event id, timestamp, idempotency key, merge
mode, the attributes to write, the state seen before, and the guard that must still hold when
it is sent. The items are final decisions: `apply --plan` sends them with the keys written
here, so applying a plan twice, or resuming one, sends nothing twice.

The digest is the SHA-256 of the canonical JSON of the plan's body (`sha256:<hex>`). It is
written into the file and checked on every read, so a plan edited by hand is refused; an
approval flow passes the digest the reviewer saw as `--expect-digest`, so a plan replaced by
another (with a matching digest of its own) is refused too.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import SheetError
from pipeline.guards import Guard
from pipeline.keys import canonical_json
from pipeline.private_files import fsync_dir, open_private, refuse_symlink

PLAN_FORMAT = "corrections-plan/1"
DIGEST_PREFIX = "sha256:"
#: A plan is read whole (it is a reviewed, bounded artefact); beyond this it is refused.
MAX_PLAN_BYTES = 256 * 1024 * 1024


class PlanError(SheetError):
    """A plan file that cannot be applied as it is (exit 2: nothing was sent)."""


@dataclass(frozen=True)
class PlanItem:
    """One change to one event, decided: what `apply --plan` sends if the guard holds."""

    event_id: str
    timestamp: str
    idempotency_key: str
    merge_mode: str
    attributes_after: Mapping[str, Any]
    attributes_before: Mapping[str, Any] | None = None
    guard: Guard | None = None
    event_type: str | None = None
    lookup_key: str | None = None
    lookup_value: str | None = None
    row_number: int | None = None
    target: str = "usermaven"
    note: str | None = None
    #: The mParticle user ({"identities": {...}, "mpid": ...}) when the plan covers mParticle.
    user: Mapping[str, Any] | None = None
    #: What mParticle receives, when not `attributes_after` (a revert: only changed ones).
    mparticle_attributes: Mapping[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "user": None if self.user is None else dict(self.user),
            "mparticle_attributes": (None if self.mparticle_attributes is None
                                     else dict(self.mparticle_attributes)),
            "target": self.target, "row_number": self.row_number,
            "event_type": self.event_type, "lookup_key": self.lookup_key,
            "lookup_value": self.lookup_value, "event_id": self.event_id,
            "timestamp": self.timestamp, "idempotency_key": self.idempotency_key,
            "merge_mode": self.merge_mode, "attributes_after": dict(self.attributes_after),
            "attributes_before": (None if self.attributes_before is None
                                  else dict(self.attributes_before)),
            "guard": None if self.guard is None else self.guard.as_json(),
            "note": self.note,
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> PlanItem:
        return PlanItem(
            event_id=str(data["event_id"]), timestamp=str(data["timestamp"]),
            idempotency_key=str(data["idempotency_key"]), merge_mode=str(data["merge_mode"]),
            attributes_after=dict(data["attributes_after"]),
            attributes_before=(None if data.get("attributes_before") is None
                               else dict(data["attributes_before"])),
            guard=Guard.from_json(data.get("guard")),
            event_type=data.get("event_type"), lookup_key=data.get("lookup_key"),
            lookup_value=data.get("lookup_value"), row_number=data.get("row_number"),
            target=str(data.get("target") or "usermaven"), note=data.get("note"),
            user=data.get("user"), mparticle_attributes=data.get("mparticle_attributes"),
        )


@dataclass(frozen=True)
class Skipped:
    """A row or event the plan will not touch, and why (listed for the reviewer)."""

    status: str
    reason: str
    event_id: str | None = None
    row_number: int | None = None
    target: str = "usermaven"

    def as_json(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "event_id": self.event_id,
                "row_number": self.row_number, "target": self.target}


@dataclass(frozen=True)
class Plan:
    """A whole plan: header and items. `digest` is computed, never stored in the object."""

    kind: str  # "sheet" or "revert"
    api: Mapping[str, Any]
    source: Mapping[str, Any]
    options: Mapping[str, Any]
    items: tuple[PlanItem, ...]
    skipped: tuple[Skipped, ...] = ()
    created_at: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT, "kind": self.kind, "created_at": self.created_at,
            "api": dict(self.api), "source": dict(self.source),
            "options": dict(self.options), "extra": dict(self.extra),
            "items": [i.as_json() for i in self.items],
            "skipped": [s.as_json() for s in self.skipped],
        }

    @property
    def digest(self) -> str:
        return body_digest(self.body())


def body_digest(body: Mapping[str, Any]) -> str:
    text = canonical_json(body)
    return DIGEST_PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_plan(plan: Plan, path: Path) -> str:
    """Write the plan atomically (owner-only, never through a symlink); return its digest."""
    body = plan.body()
    digest = body_digest(body)
    text = json.dumps({"digest": digest, "plan": body}, ensure_ascii=False, indent=1,
                      sort_keys=True)
    path = Path(path)
    refuse_symlink(path, "plan file", PlanError)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with os.fdopen(open_private(tmp, "plan file", os.O_WRONLY | os.O_CREAT | os.O_EXCL),
                       "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise PlanError(f"cannot write the plan to {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return digest


def read_plan(path: Path, expect_digest: str | None = None) -> Plan:
    """Read and check a plan; refuse a modified one, or one other than the approved digest."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_PLAN_BYTES:
            raise PlanError(f"{path}: a plan over {MAX_PLAN_BYTES // 2**20} MiB is refused; "
                            "split the sheet into smaller plans")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanError(f"{path}: no such plan; write one with `corrections plan SHEET "
                        "--out PLAN`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanError(f"{path} is not a readable plan file ({exc}); write one with "
                        "`corrections plan SHEET --out PLAN`") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("plan"), dict) \
            or doc["plan"].get("format") != PLAN_FORMAT:
        raise PlanError(f"{path} is not a corrections plan ({PLAN_FORMAT}); write one with "
                        "`corrections plan SHEET --out PLAN`")
    body = doc["plan"]
    actual = body_digest(body)
    if doc.get("digest") != actual:
        raise PlanError(f"{path} was modified after it was written (its content no longer "
                        "matches its digest); nothing was sent. Make a new plan with "
                        "`corrections plan … --out` and have it reviewed again.")
    if expect_digest is not None and _norm_digest(expect_digest) != actual:
        raise PlanError(f"{path} has digest {actual}, not the approved "
                        f"{_norm_digest(expect_digest)}; nothing was sent. Apply the plan "
                        "that was approved, or have this one approved.")
    try:
        return Plan(
            kind=str(body["kind"]), api=dict(body["api"]), source=dict(body["source"]),
            options=dict(body["options"]), created_at=str(body.get("created_at", "")),
            extra=dict(body.get("extra") or {}),
            items=tuple(PlanItem.from_json(i) for i in body["items"]),
            skipped=tuple(Skipped(**s) for s in body.get("skipped", ())),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanError(f"{path}: a plan item is incomplete ({exc}); make a new plan") from None


def _norm_digest(text: str) -> str:
    text = text.strip().lower()
    return text if text.startswith(DIGEST_PREFIX) else DIGEST_PREFIX + text

