"""Second target: the mParticle server-to-server Events API (corrections as user data).

mParticle has no mutation endpoint, so a correction travels as a `custom_event` (or as user
attributes) for the user, batched per user, through `/v2/bulkevents` (or its `/historical`
twin for events older than 30 days). Modules: `limits` (documented numbers), `mapping`
(row → event), `batching` (events → batches → requests), `ledger` (checkpoint tables),
`client` (wire format and answers), `deliver` (the run).
"""
