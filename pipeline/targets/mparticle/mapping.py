"""From a correction row to what mParticle receives: the user, the event, the keys.

mParticle has no mutation endpoint, so a correction becomes data for the user: one
`custom_event` per corrected event (`--mparticle-as event`), or user attributes
(`--mparticle-as user-attributes`). Everything here is offline and deterministic: the same row
gives the same event, the same `source_message_id`, on any machine and any rerun.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.keys import canonical_json, digest, idempotency_key, per_event_key
from pipeline.model import Correction
from pipeline.targets.mparticle.limits import (
    ENVIRONMENTS,
    IDENTITY_KEYS,
    IDENTITY_PREFIX,
    MAX_EVENT_ATTRIBUTES,
    MAX_NAME_CHARS,
    MAX_USER_ATTRIBUTES,
    MAX_VALUE_CHARS,
    MPID_COLUMN,
)

MODES = ("event", "user-attributes")
DEFAULT_EVENT_NAME = "event_correction"
_KEY_PREFIX = "corr-v1-"
_MESSAGE_NS = uuid.uuid5(uuid.NAMESPACE_OID, "corrections.mparticle.source_message_id")
_INT64 = 2**63
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: custom_attributes added to every event so downstream tools can tie it to the original.
REFERENCE_ATTRIBUTES = ("correction_key", "correction_event_id", "correction_event_type",
                        "correction_lookup")


@dataclass(frozen=True)
class MParticleOptions:
    """How corrections are shaped for mParticle (`--mparticle-as`, event name, environment)."""

    mode: str = "event"
    event_name: str = DEFAULT_EVENT_NAME
    environment: str = "production"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.environment not in ENVIRONMENTS:
            raise ValueError(f"environment must be one of {', '.join(ENVIRONMENTS)}")
        if not self.event_name.strip():
            raise ValueError("event_name must not be empty")
        if len(self.event_name) > MAX_NAME_CHARS:
            raise ValueError(f"event_name is longer than {MAX_NAME_CHARS} characters")


@dataclass(frozen=True)
class Problem:
    """Why a row cannot go to mParticle; the column at fault when there is one."""

    column: str | None
    message: str

    def for_row(self, row_number: int) -> str:
        where = f"row {row_number}" + (f", column {self.column!r}" if self.column else "")
        return f"{where}: mparticle: {self.message}"


@dataclass(frozen=True)
class User:
    """The mParticle user a batch is about: identities and/or an MPID."""

    identities: tuple[tuple[str, str], ...]
    mpid: int | None

    @property
    def key(self) -> str:
        """Stable name of the user, for grouping events into one batch per user."""
        return hashlib.sha256(canonical_json([list(self.identities), self.mpid])
                              .encode()).hexdigest()[:24]

    def batch_fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.identities:
            out["user_identities"] = dict(self.identities)
        if self.mpid is not None:
            out["mpid"] = self.mpid
        return out


@dataclass(frozen=True)
class Source:
    """One event a correction is about: its correction key and original time, if known."""

    correction_key: str
    event_id: str | None
    event_time: datetime | None


def source_message_id(correction_key: str) -> str:
    """A UUID (the schema requires one) derived from the correction's idempotency key."""
    return str(uuid.uuid5(_MESSAGE_NS, correction_key))


def _key(*parts: str) -> str:
    return (_KEY_PREFIX + digest(*parts))[:64]


# -- the user -------------------------------------------------------------------------------


def user_of(c: Correction) -> User | Problem:
    """The row's user, or why it has none mParticle would accept."""
    identities: list[tuple[str, str]] = []
    for key, value in sorted(c.identities.items()):
        if key not in IDENTITY_KEYS:
            return Problem(IDENTITY_PREFIX + key, f"{key!r} is not an identity the Events API "
                           f"accepts; use one of {', '.join(IDENTITY_KEYS)}")
        text = str(value).strip()
        if text:
            identities.append((key, text))
    mpid: int | None = None
    if c.mpid is not None and str(c.mpid).strip():
        text = str(c.mpid).strip()
        try:
            mpid = int(text)
        except ValueError:
            return Problem(MPID_COLUMN, f"{text[:40]!r} is not an MPID; an MPID is a whole "
                           "number (64-bit, may be negative)")
        if not -_INT64 <= mpid < _INT64:
            return Problem(MPID_COLUMN, f"{text[:40]} is outside the 64-bit range of an MPID")
    if not identities and mpid is None:
        return Problem(None, "no user: fill an identity column (identity.customer_id, "
                       "identity.email, …) or mpid; mParticle stores data per user")
    return User(tuple(identities), mpid)


# -- attribute values -----------------------------------------------------------------------


def _scalar(value: Any) -> Any:
    """A value the schema's `String` type allows; nested JSON travels as its compact text."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return canonical_json(value)


def _user_value(value: Any) -> Any:
    """User attributes may also be arrays of scalars (`StringOrArray`)."""
    if isinstance(value, list) and all(
            v is None or isinstance(v, str | bool | int | float) for v in value):
        return [_scalar(v) for v in value]
    return _scalar(value)


def _value_chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return max((_value_chars(v) for v in value), default=0)
    return len(canonical_json(value))


def _check_attributes(attrs: Mapping[str, Any], limit: int, what: str) -> Problem | None:
    if len(attrs) > limit:
        return Problem(None, f"{len(attrs)} {what}; the Events API takes at most {limit}: split "
                       "the change over several rows")
    for name, value in attrs.items():
        if len(name) > MAX_NAME_CHARS:
            return Problem(f"set.{name[:40]}…", f"attribute name is {len(name)} characters; "
                           f"the Events API takes at most {MAX_NAME_CHARS}")
        n = _value_chars(value)
        if n > MAX_VALUE_CHARS:
            return Problem(f"set.{name}", f"value is {n} characters; the Events API takes at "
                           f"most {MAX_VALUE_CHARS} per value")
    return None


# -- the payload ----------------------------------------------------------------------------


def custom_attributes(c: Correction, source: Source) -> dict[str, Any]:
    """The corrected attributes plus references back to the corrected event."""
    out = {name: _scalar(v) for name, v in sent_attributes(c).items()}
    refs: dict[str, Any] = {"correction_key": source.correction_key}
    if source.event_id:
        refs["correction_event_id"] = source.event_id
    if c.event_type:
        refs["correction_event_type"] = c.event_type
    if c.lookup_key is not None and c.lookup_value is not None:
        refs["correction_lookup"] = f"{c.lookup_key}={c.lookup_value}"
    for name, value in refs.items():
        out.setdefault(name, value)
    return out


def user_attributes(c: Correction) -> dict[str, Any]:
    return {name: _user_value(v) for name, v in sent_attributes(c).items()}


def sent_attributes(c: Correction) -> Mapping[str, Any]:
    """The attributes mParticle receives for a correction."""
    return c.attributes if c.mparticle_attributes is None else c.mparticle_attributes


def custom_event(c: Correction, source: Source, options: MParticleOptions) -> dict[str, Any]:
    """One `custom_event` (type `other`) carrying the correction."""
    assert source.event_time is not None
    return {
        "event_type": "custom_event",
        "data": {
            "event_name": options.event_name,
            "custom_event_type": "other",
            "timestamp_unixtime_ms": to_ms(source.event_time),
            "source_message_id": source_message_id(source.correction_key),
            "custom_attributes": custom_attributes(c, source),
        },
    }


def to_ms(when: datetime) -> int:
    """Unix milliseconds, in integers (a float would round some milliseconds down)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // timedelta(milliseconds=1)


# -- checks and sources ---------------------------------------------------------------------


def check_row(c: Correction, options: MParticleOptions) -> Problem | None:
    """Offline: what mParticle's documented limits say about this row (None when fine)."""
    user = user_of(c)
    if isinstance(user, Problem):
        return user
    if options.mode == "user-attributes":
        return _check_attributes(user_attributes(c), MAX_USER_ATTRIBUTES, "user attributes")
    probe = Source(_key("probe"), "00000000-0000-0000-0000-000000000000", None)
    attrs = custom_attributes(c, probe)
    clash = [n for n in REFERENCE_ATTRIBUTES if n in sent_attributes(c)]
    if clash:
        return Problem(f"set.{clash[0]}", f"{clash[0]!r} is reserved for the reference to the "
                       "corrected event; rename the attribute")
    return _check_attributes(attrs, MAX_EVENT_ATTRIBUTES, "custom attributes (with the "
                             f"{len(attrs) - len(sent_attributes(c))} reference attributes)")


def sheet_source(c: Correction, namespace: str) -> Source:
    """The event a row means when Usermaven is not asked: from the sheet alone.

    With an `event_id`, the correction key is the Usermaven idempotency key of the same change,
    so the report lines of both targets agree. Without one, the key is derived from the
    business key (event type, lookup key and value) and the change. A sheet's explicit key is
    made unique to its event (`per_event_key`): without a lookup we cannot tell whether it is
    reused across events, and a shared key would make the second row a false duplicate.
    """
    if c.event_id is not None:
        subject = c.event_id
        key = idempotency_key(namespace, c.event_id, c.attributes, c.merge_mode)
    else:
        subject = f"lookup:{c.event_type}:{c.lookup_key}={c.lookup_value}"
        key = _key("mparticle-lookup", namespace, c.event_type or "", c.lookup_key or "",
                   c.lookup_value or "", canonical_json(dict(c.attributes)), c.merge_mode)
    if c.idempotency_key:
        key = per_event_key(c.idempotency_key, subject)
    return Source(key, c.event_id, c.event_time or c.timestamp)


def user_attributes_key(c: Correction, namespace: str) -> str:
    """Key of a user-attributes correction: one per (namespace, row content)."""
    return _key("mparticle-user-attributes", namespace, c.row_key)


NO_TIME = Problem("event_time", "no event time for the custom event: give event_time (or "
                  "event_id with timestamp), add --target usermaven so the lookup supplies the "
                  "event's time, or use --mparticle-as user-attributes")


def offline_problem(c: Correction, options: MParticleOptions, *,
                    usermaven: bool) -> Problem | None:
    """Everything checkable before sending: limits, the user, and (without Usermaven to look
    the event up) an event time for the custom event."""
    problem = check_row(c, options)
    if problem is not None:
        return problem
    if options.mode == "event" and not usermaven and (c.event_time or c.timestamp) is None:
        return NO_TIME
    return None
