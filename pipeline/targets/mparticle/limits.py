"""mParticle's documented Events API limits and enums, in one place.

Sources: the Events API reference (seed 001) and the published batch schema (draft-07,
`specs/mparticle/mparticle.inbound.eventsapi.schema.json`). Where the two differ we keep to
the schema, because that is what a batch is validated against.
"""

from __future__ import annotations

from datetime import timedelta

#: A request body must be *less than* this many bytes.
MAX_REQUEST_BYTES = 256 * 1024
#: A batch (one user) may be at most this many bytes.
MAX_BATCH_BYTES = 128 * 1024
#: Batches per `/v2/bulkevents` request.
MAX_BATCHES_PER_REQUEST = 100
#: Custom attributes per event, and user attributes per batch.
MAX_EVENT_ATTRIBUTES = 100
MAX_USER_ATTRIBUTES = 100
#: Attribute names and values, in characters.
MAX_NAME_CHARS = 256
MAX_VALUE_CHARS = 4096
#: Events per batch: not a documented number; we stay at the per-request batch figure so a
#: user with many corrections never produces one enormous batch.
MAX_EVENTS_PER_BATCH = 100

#: Events older than this go to `/v2/bulkevents/historical`.
HISTORICAL_AFTER = timedelta(days=30)
#: `/historical` refuses any event younger than this.
HISTORICAL_MIN_AGE = timedelta(hours=72)

#: Identity keys the 2021 batch schema allows (`user_identities`, additionalProperties false).
#: The newer third-party copy adds other_id_5..10 and phone numbers; the published schema
#: rejects them, so we do too.
IDENTITY_KEYS = (
    "customer_id", "email", "other", "facebook", "twitter", "google", "microsoft", "yahoo",
    "alias", "facebook_custom_audience_id", "other_id_2", "other_id_3", "other_id_4",
)
IDENTITY_PREFIX = "identity."
MPID_COLUMN = "mpid"

ENVIRONMENTS = ("production", "development")
CUSTOM_EVENT_TYPES = ("navigation", "location", "search", "transaction", "user_content",
                      "user_preference", "social", "other", "media")

#: Pods by name; each serves the Events API under `/v2`.
PODS = {
    "US1": "https://s2s.us1.mparticle.com",
    "US2": "https://s2s.us2.mparticle.com",
    "EU1": "https://s2s.eu1.mparticle.com",
    "AU1": "https://s2s.au1.mparticle.com",
}

BULK_PATH = "/v2/bulkevents"
HISTORICAL_PATH = "/v2/bulkevents/historical"
EVENTS_PATH = "/v2/events"

#: What the audit report adds for mParticle's lines: the ids it deduplicates on, and where
#: each batch went.
REPORT_COLUMNS = ("source_message_id", "source_request_id", "endpoint")
