"""The mParticle target: mapping, batching, routing, limits, resume, and answers, end to end.

Every batch the pipeline sends to the sandbox is validated, after each test, against
mParticle's published batch schema (read in place from the shared specifications, with a
format checker; without them these tests skip and say how to get them).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import REPO, read_report, run_cli, shared_file, write_csv
from jsonschema import Draft7Validator

from pipeline.errors import SheetError
from pipeline.jobs import ApplyOutcome, SheetJob, Target, apply_sheet, plan_sheet
from pipeline.model import SheetDefaults
from pipeline.report import COLUMNS, TARGET_COLUMNS
from pipeline.run_types import RunOptions
from pipeline.sandbox.app import STATE
from pipeline.sandbox.mparticle import SANDBOX_MP_KEY, SANDBOX_MP_SECRET, MParticleState
from pipeline.sandbox.server import SANDBOX_TOKEN, SandboxServer
from pipeline.targets.mparticle.batching import (
    Outgoing,
    PlannedDelivery,
    build_batches,
    pack_requests,
    route,
)
from pipeline.targets.mparticle.client import MParticleTarget, base_url
from pipeline.targets.mparticle.deliver import MParticleSetup
from pipeline.targets.mparticle.limits import (
    BULK_PATH,
    HISTORICAL_PATH,
    MAX_BATCH_BYTES,
    MAX_REQUEST_BYTES,
)
from pipeline.targets.mparticle.mapping import MParticleOptions, User, source_message_id
from pipeline.validate_job import validate_sheet

SCHEMA = "specs/mparticle/mparticle.inbound.eventsapi.schema.json"
FAST = {"backoff_base": 0.001, "backoff_max": 0.01}
MP_ENV = {"MPARTICLE_API_KEY": SANDBOX_MP_KEY, "MPARTICLE_API_SECRET": SANDBOX_MP_SECRET,
          "USERMAVEN_TOKEN": SANDBOX_TOKEN}
NOW = datetime.now(UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# -- fixtures and helpers ---------------------------------------------------------------------


@functools.cache
def published_schema() -> Draft7Validator:
    schema = json.loads(shared_file(SCHEMA).read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER)


@pytest.fixture(scope="session")
def batch_schema() -> Draft7Validator:
    """mParticle's published batch schema (draft-07) with a format checker."""
    return published_schema()


def schema_errors(validator: Draft7Validator, batch: Any) -> list[str]:
    return sorted(f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(batch))


def mp_state(sandbox: SandboxServer) -> MParticleState:
    return sandbox.app[STATE].mparticle


@pytest.fixture
def mp(sandbox: SandboxServer, batch_schema: Draft7Validator) -> Iterator[SandboxServer]:
    """The sandbox; afterwards every batch it received must match the published schema."""
    yield sandbox
    received = mp_state(sandbox).batches_received()
    for record in received:
        assert schema_errors(batch_schema, record["batch"]) == [], record["batch"]


def setup_for(sandbox: SandboxServer | None, *, secret: str = SANDBOX_MP_SECRET,
              transport: httpx.AsyncBaseTransport | None = None,
              **options: Any) -> MParticleSetup:
    url = sandbox.url if sandbox else "http://127.0.0.1:9"
    return MParticleSetup(MParticleTarget(url, SANDBOX_MP_KEY, secret, url, transport),
                          MParticleOptions(**options))


def run(sheet: Path, tmp_path: Path, sandbox: SandboxServer | None, *,
        usermaven: bool = True, setup: MParticleSetup | None = None,
        **options: Any) -> ApplyOutcome:
    target = Target(sandbox.url, SANDBOX_TOKEN, sandbox.url) if usermaven and sandbox else None
    return apply_sheet(SheetJob(sheet, SheetDefaults()), target,
                       RunOptions(**{**FAST, **options}), checkpoint=tmp_path / "cp.sqlite",
                       report=tmp_path / "audit.csv", install_signals=False,
                       mparticle=setup if setup is not None else setup_for(sandbox))


def lines_of(out: ApplyOutcome, target: str = "mparticle") -> list[dict[str, str]]:
    return [r for r in read_report(Path(out.report)) if r["target"] == target]


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event_rows(n: int, *, ago: timedelta = timedelta(days=5), user: str | None = None,
               start: int = 0, **cells: str) -> list[dict[str, str]]:
    """Rows correcting events by id (no lookup), one per event, for mParticle alone."""
    return [{"event_id": f"00000000-0000-4000-8000-{start + i:012d}",
             "timestamp": iso(NOW - ago), "identity.customer_id": user or f"C-{start + i}",
             "set.final_price": "1.00", **cells} for i in range(n)]


ORDERS = [  # sample_data events: (order, event_id) — all resolvable by lookup
    ("ORD-1001", "518f47a5-985c-4482-8a85-21704f0d50d2", "2026-09"),
    ("ORD-1002", "407dfe54-d8e9-4aa1-9744-d89e5f6107b0", "2026-09"),
    ("ORD-1032", "3bb5fe0c-cfde-43a8-954a-a17d7501fe01", "2026-10"),
]


def both_targets_sheet(tmp_path: Path) -> Path:
    rows = [{"event_type": "order_completed", "lookup_key": "order_id", "lookup_value": o,
             "event_time": month, "identity.customer_id": f"CUST-{i}",
             "identity.email": f"user{i}@example.com", "set.final_price": f"{10 + i}.00"}
            for i, (o, _eid, month) in enumerate(ORDERS)]
    rows.append({"event_id": "683b2922-4bad-4912-95d6-d2f309f7adc3",
                 "timestamp": "2026-09-30T12:00:00Z", "mpid": "-8412337741512288",
                 "set.final_price": "95.50",
                 "event_attributes": '{"note": {"reason": "late discount"}}'})
    return write_csv(tmp_path / "both.csv", rows)


# -- both targets ---------------------------------------------------------------------------


def test_a_sheet_sent_to_both_targets_lands_once_on_each(mp, tmp_path):
    """Usermaven applies each change once and mParticle counts each message once; exit 0."""
    out = run(both_targets_sheet(tmp_path), tmp_path, mp)
    assert out.exit_code == 0
    assert out.by_target == {"usermaven": {"applied": 4}, "mparticle": {"accepted": 4}}
    stats = mp.stats()
    assert stats["double_applied"] == []
    assert all(n == 1 for n in stats["applications"].values())
    assert stats["mparticle"]["messages_twice"] == []
    usermaven = {r["row_number"]: r for r in lines_of(out, "usermaven")}
    mparticle = {r["row_number"]: r for r in lines_of(out)}
    assert set(stats["mparticle"]["messages"]) == {
        source_message_id(r["idempotency_key"]) for r in usermaven.values()}
    for n, line in mparticle.items():
        assert line["status"] == "accepted" and line["http_status"] == "202"
        assert line["idempotency_key"] == usermaven[n]["idempotency_key"]
        assert line["source_message_id"] == source_message_id(line["idempotency_key"])
        assert line["source_request_id"] and line["endpoint"] in (BULK_PATH, HISTORICAL_PATH)


def test_the_event_time_comes_from_the_usermaven_lookup(mp, tmp_path):
    """Each custom event carries the looked-up event's `_timestamp` and a reference to it."""
    run(both_targets_sheet(tmp_path), tmp_path, mp)
    events = {e["custom_attributes"]["correction_event_id"]: e
              for e in mp_state(mp).accepted}
    for order, event_id, _month in ORDERS:
        stored = mp.store.get(event_id)
        assert events[event_id]["timestamp_unixtime_ms"] == (
            stored.timestamp - EPOCH) // timedelta(milliseconds=1)
        assert events[event_id]["custom_attributes"]["correction_lookup"] == f"order_id={order}"
        assert events[event_id]["event_name"] == "event_correction"
        assert events[event_id]["custom_event_type"] == "other"


def test_a_rerun_sends_nothing_to_either_target(mp, tmp_path):
    """Everything done: the second run makes no request to Usermaven or mParticle."""
    sheet = both_targets_sheet(tmp_path)
    run(sheet, tmp_path, mp)
    before = mp.stats()
    again = run(sheet, tmp_path, mp)
    after = mp.stats()
    assert again.result.requests == 0 and again.mparticle.requests == 0
    assert after["requests"] == before["requests"]
    assert after["mparticle"]["requests"] == before["mparticle"]["requests"]
    assert again.by_target["mparticle"] == {"accepted": 4}


def test_statuses_are_per_target_a_row_without_a_user_still_reaches_usermaven(mp, tmp_path):
    """No identity: invalid for mParticle with its row number, applied on Usermaven."""
    sheet = write_csv(tmp_path / "s.csv", [
        {"event_type": "order_completed", "lookup_key": "order_id", "lookup_value": "ORD-1001",
         "event_time": "2026-09", "identity.customer_id": "", "set.final_price": "1.00"}])
    out = run(sheet, tmp_path, mp)
    assert out.by_target == {"usermaven": {"applied": 1}, "mparticle": {"invalid": 1}}
    line = lines_of(out)[0]
    assert line["error"].startswith("row 2: mparticle: no user")
    assert mp_state(mp).counts["bulkevents"] + mp_state(mp).counts["historical"] == 0
    assert out.exit_code == 1


def test_a_row_usermaven_cannot_find_is_not_found_for_mparticle_too(mp, tmp_path):
    """Without the event there is no time to send: mParticle mirrors `not_found`."""
    sheet = write_csv(tmp_path / "s.csv", [
        {"event_type": "order_completed", "lookup_key": "order_id", "lookup_value": "ORD-9999",
         "event_time": "2026-09", "identity.customer_id": "C-1", "set.final_price": "1.00"}])
    out = run(sheet, tmp_path, mp)
    line = lines_of(out)[0]
    assert line["status"] == "not_found" and "usermaven lookup" in line["error"]


def test_usermaven_alone_keeps_the_eighteen_column_report(mp, tmp_path):
    """Without mParticle the audit report has exactly the original columns."""
    out = apply_sheet(SheetJob(both_targets_sheet(tmp_path)),
                      Target(mp.url, SANDBOX_TOKEN, mp.url), RunOptions(**FAST),
                      checkpoint=tmp_path / "cp.sqlite", report=tmp_path / "a.csv",
                      install_signals=False)
    header = Path(out.report).read_text().splitlines()[0].split(",")
    assert tuple(header) == COLUMNS and len(COLUMNS) == 18
    assert mp_state(mp).counts == {}


def test_with_mparticle_the_report_says_each_lines_target(mp, tmp_path):
    """Both targets: one line per (row, event, target), with the mParticle ids."""
    out = run(both_targets_sheet(tmp_path), tmp_path, mp)
    lines = read_report(Path(out.report))
    assert tuple(lines[0]) == TARGET_COLUMNS
    assert [(r["row_number"], r["target"]) for r in lines] == [
        (str(n), t) for n in range(2, 6) for t in ("usermaven", "mparticle")]


def test_mparticle_alone_needs_no_usermaven_token_and_takes_the_sheet_time(mp, tmp_path):
    """mParticle only: event time from the sheet; Usermaven is never called."""
    rows = event_rows(2)
    out = run(write_csv(tmp_path / "s.csv", rows), tmp_path, mp, usermaven=False)
    assert out.exit_code == 0 and out.by_target == {"mparticle": {"accepted": 2}}
    assert mp.stats()["requests"] == {"lookup": 0, "mutation": 0}
    times = {e["timestamp_unixtime_ms"] for e in mp_state(mp).accepted}
    sheet_time = datetime.fromisoformat(rows[0]["timestamp"].replace("Z", "+00:00"))
    assert times == {(sheet_time - EPOCH) // timedelta(milliseconds=1)}


def test_lookup_rows_without_an_event_time_are_invalid_for_mparticle_alone(mp, tmp_path):
    """No Usermaven lookup and no event_time: nothing says when the event happened."""
    sheet = write_csv(tmp_path / "s.csv", [
        {"event_type": "order_completed", "lookup_key": "order_id", "lookup_value": "ORD-1",
         "from_timestamp": "2026-09-01", "to_timestamp": "2026-09-30",
         "identity.customer_id": "C-1", "set.final_price": "1.00"}])
    out = run(sheet, tmp_path, mp, usermaven=False)
    line = lines_of(out)[0]
    assert line["status"] == "invalid" and "no event time" in line["error"]


def test_identical_corrections_from_two_rows_are_sent_once(mp, tmp_path):
    """Same change to the same event (another row key): the second row is `duplicate`."""
    rows = event_rows(1) + [dict(event_rows(1)[0], **{"identity.email": "x@example.com"})]
    out = run(write_csv(tmp_path / "s.csv", rows), tmp_path, mp, usermaven=False)
    assert [r["status"] for r in lines_of(out)] == ["accepted", "duplicate"]
    assert out.exit_code == 0
    assert mp.stats()["mparticle"]["batches_accepted"] == 1


# -- user attributes ------------------------------------------------------------------------


def test_user_attributes_mode_sends_only_user_attributes_in_sheet_order(mp, tmp_path):
    """Two rows for one user: one batch, no events, the later value wins."""
    rows = [{"event_id": f"00000000-0000-4000-8000-00000000000{i}",
             "timestamp": "2026-09-01", "identity.customer_id": "C-9", "set.plan": plan}
            for i, plan in enumerate(["pro", "team"])]
    out = run(write_csv(tmp_path / "s.csv", rows), tmp_path, mp, usermaven=False,
              setup=setup_for(mp, mode="user-attributes"))
    assert out.by_target["mparticle"] == {"accepted": 2}
    received = mp_state(mp).batches_received()
    assert len(received) == 1
    batch = received[0]["batch"]
    assert "events" not in batch and batch["user_attributes"] == {"plan": "team"}
    assert received[0]["endpoint"] == "bulkevents"
    assert list(mp_state(mp).profiles.values()) == [{"plan": "team"}]


# -- the schema -----------------------------------------------------------------------------


def test_batches_with_every_value_kind_match_the_published_schema(mp, tmp_path, batch_schema):
    """Numbers, booleans, nested JSON, MPIDs and several identities all validate."""
    rows = [
        {"event_id": "00000000-0000-4000-8000-000000000001", "timestamp": iso(NOW),
         "identity.customer_id": "C-1", "identity.email": "a@example.com",
         "identity.other_id_4": "x", "mpid": "9223372036854775807",
         "event_attributes": '{"n": 1, "f": 1.5, "b": true, "z": null, "o": {"k": [1, 2]}}'},
        {"event_id": "00000000-0000-4000-8000-000000000002",
         "timestamp": iso(NOW - timedelta(days=90)), "mpid": "-1", "set.x": "y"},
    ]
    sheet = write_csv(tmp_path / "s.csv", rows)
    for mode in ("event", "user-attributes"):
        out = run(sheet, tmp_path / mode, mp, usermaven=False, setup=setup_for(mp, mode=mode))
        assert out.exit_code == 0, lines_of(out)
    received = mp_state(mp).batches_received()
    assert len(received) == 4
    for record in received:
        assert schema_errors(batch_schema, record["batch"]) == []
        assert "schema_version" not in record["batch"]
    nested = next(r["batch"] for r in received if r["batch"].get("events")
                  and r["batch"]["mpid"] == 2**63 - 1)
    assert nested["events"][0]["data"]["custom_attributes"]["o"] == '{"k":[1,2]}'


def test_the_published_schema_rejects_what_the_pipeline_never_sends(batch_schema):
    """The schema really bites: schema_version, customerid and a non-UUID message id fail."""
    good = {"environment": "production", "user_identities": {"customer_id": "1"},
            "events": [{"event_type": "custom_event", "data": {
                "event_name": "x", "custom_event_type": "other",
                "source_message_id": str(uuid.uuid4())}}]}
    assert schema_errors(batch_schema, good) == []
    assert schema_errors(batch_schema, {**good, "schema_version": 2})
    assert schema_errors(batch_schema, {**good, "user_identities": {"customerid": "1"}})
    bad_id = json.loads(json.dumps(good))
    bad_id["events"][0]["data"]["source_message_id"] = "corr-v1-abc"
    assert schema_errors(batch_schema, bad_id)


# -- keys -----------------------------------------------------------------------------------


def test_source_ids_are_deterministic_uuids(tmp_path):
    """The same corrections give the same source_message_id and source_request_id."""
    user = User((("customer_id", "C-1"),), None)

    def deliveries() -> list[PlannedDelivery]:
        return [PlannedDelivery("r", 2, "corr-v1-x", 0, source_message_id("corr-v1-x"), user,
                                event_time=NOW, event={"event_type": "custom_event", "data": {
                                    "event_name": "e", "custom_event_type": "other"}})]

    a, _ = build_batches(deliveries(), MParticleOptions(), NOW)
    b, _ = build_batches(deliveries(), MParticleOptions(), NOW)
    assert [x.batch_id for x in a] == [x.batch_id for x in b]
    assert a[0].body == b[0].body
    assert uuid.UUID(a[0].batch_id).version == 5
    assert uuid.UUID(source_message_id("corr-v1-x")).version == 5
    assert source_message_id("corr-v1-x") != source_message_id("corr-v1-y")


# -- historical routing ---------------------------------------------------------------------


@pytest.mark.parametrize(("age", "endpoint"), [
    (timedelta(hours=1), BULK_PATH), (timedelta(hours=71, minutes=59), BULK_PATH),
    (timedelta(days=29), BULK_PATH), (timedelta(days=30), BULK_PATH),
    (timedelta(days=30, milliseconds=1), HISTORICAL_PATH), (timedelta(days=400), HISTORICAL_PATH),
    (-timedelta(days=1), BULK_PATH),
])
def test_route_sends_only_events_older_than_30_days_to_historical(age, endpoint):
    """Older than 30 days → /historical; anything younger (so never < 72 h) → /bulkevents."""
    assert route(NOW - age, NOW) == endpoint


def test_old_events_go_to_historical_and_recent_ones_never_do(mp, tmp_path):
    """One user's events split by age: > 30 days on /historical, the rest on /bulkevents."""
    ages = {"40d": timedelta(days=40), "31d": timedelta(days=31), "29d": timedelta(days=29),
            "10d": timedelta(days=10), "71h": timedelta(hours=71), "1h": timedelta(hours=1)}
    rows = [dict(event_rows(1, ago=age, user="C-1", start=i)[0], **{"set.age": name})
            for i, (name, age) in enumerate(ages.items())]
    out = run(write_csv(tmp_path / "s.csv", rows), tmp_path, mp, usermaven=False)
    assert out.exit_code == 0
    where = {e["custom_attributes"]["age"]: e["endpoint"] for e in mp_state(mp).accepted}
    assert where == {"40d": "historical", "31d": "historical", "29d": "bulkevents",
                     "10d": "bulkevents", "71h": "bulkevents", "1h": "bulkevents"}
    by_endpoint = {r["endpoint"]: r["batch"] for r in mp_state(mp).batches_received()}
    assert len(by_endpoint["historical"]["events"]) == 2  # one batch per user and endpoint
    assert {r["endpoint"] for r in lines_of(out)} == {BULK_PATH, HISTORICAL_PATH}


# -- limits, offline ------------------------------------------------------------------------


def _attrs(n: int) -> str:
    return json.dumps({f"a{i:03d}": "1" for i in range(n)})


@pytest.mark.parametrize(("cells", "fragment"), [
    ({"event_attributes": _attrs(99)}, "101 custom attributes"),
    ({"set." + "n" * 257: "1"}, "attribute name is 257 characters"),
    ({"set.v": "x" * 4097}, "value is 4097 characters"),
    ({"identity.customer_id": ""}, "no user"),
    ({"mpid": "12ab"}, "is not an MPID"),
    ({"mpid": str(2**63)}, "64-bit"),
    ({"set.correction_key": "x"}, "reserved"),
])
def test_each_documented_limit_is_checked_offline_with_the_row_number(mp, tmp_path, cells,
                                                                      fragment):
    """Over a limit: a row-numbered problem before sending; that row is never sent."""
    row = {**event_rows(1)[0], **cells}
    if "set.final_price" in row and "event_attributes" in cells:
        del row["set.final_price"]
    sheet = write_csv(tmp_path / "s.csv", [event_rows(1, start=5)[0], row])
    problems: list[str] = []
    out = validate_sheet(SheetJob(sheet), lambda p: problems.append(str(p)),
                         mparticle=MParticleOptions(), usermaven=False)
    assert out.problems == 1 and len(problems) == 1
    assert problems[0].startswith("row 3") and fragment in problems[0]
    applied = run(sheet, tmp_path, mp, usermaven=False)
    statuses = [r["status"] for r in lines_of(applied)]
    assert statuses == ["accepted", "invalid"]
    assert fragment in lines_of(applied)[1]["error"]
    assert mp_state(mp).counts["batches_accepted"] == 1


@pytest.mark.parametrize(("cells", "ok"), [
    ({"event_attributes": _attrs(98)}, True),      # + 2 references = 100
    ({"set." + "n" * 256: "1"}, True),
    ({"set.v": "x" * 4096}, True),
    ({"mpid": str(-2**63)}, True),
])
def test_values_at_a_limit_are_sent(mp, tmp_path, cells, ok):
    """Exactly at a documented limit the row goes through (and the sandbox takes it)."""
    row = {**event_rows(1)[0], **cells}
    if "event_attributes" in cells:
        del row["set.final_price"]
    out = run(write_csv(tmp_path / "s.csv", [row]), tmp_path, mp, usermaven=False)
    assert (out.by_target["mparticle"] == {"accepted": 1}) is ok


def test_user_attribute_count_is_limited_to_100(mp, tmp_path):
    """user-attributes mode: 100 attributes pass, 101 are a row-numbered problem."""
    rows = [{**event_rows(1, start=i)[0], "event_attributes": _attrs(n)}
            for i, n in enumerate((100, 101))]
    for r in rows:
        del r["set.final_price"]
    out = run(write_csv(tmp_path / "s.csv", rows), tmp_path, mp, usermaven=False,
              setup=setup_for(mp, mode="user-attributes"))
    assert [r["status"] for r in lines_of(out)] == ["accepted", "invalid"]
    assert "101 user attributes" in lines_of(out)[1]["error"]


def test_an_identity_key_the_schema_does_not_allow_is_refused_before_anything_runs(tmp_path):
    """identity.phone is not in the schema's user_identities: a sheet error (exit 2)."""
    sheet = write_csv(tmp_path / "s.csv", [{**event_rows(1)[0], "identity.phone": "1"}])
    with pytest.raises(SheetError, match=r"identity\.phone.*not an mParticle identity"):
        validate_sheet(SheetJob(sheet))
    res = run_cli(["validate", str(sheet), "--target", "mparticle"])
    assert res.returncode == 2 and "identity.customer_id" in res.stderr


def test_one_users_corrections_are_split_into_batches_of_at_most_128_kb(mp, tmp_path):
    """40 corrections of ~4 KB for one user: several batches, each within 128 KB."""
    rows = event_rows(40, user="C-big", **{"set.note": "n" * 4000})
    out = run(write_csv(tmp_path / "s.csv", rows), tmp_path, mp, usermaven=False)
    assert out.by_target["mparticle"] == {"accepted": 40}
    batches = mp_state(mp).batches_received()
    assert len(batches) >= 2
    for record in batches:
        size = len(json.dumps(record["batch"], separators=(",", ":")).encode())
        assert size <= MAX_BATCH_BYTES


def test_requests_stay_under_256_kb_and_100_batches(mp, tmp_path):
    """Big batches make several requests < 256 KB; many small ones at most 100 per request."""
    big = event_rows(80, **{"set.note": "n" * 4000})
    small = event_rows(150, start=1000)
    out = run(write_csv(tmp_path / "s.csv", big + small), tmp_path, mp, usermaven=False)
    assert out.by_target["mparticle"] == {"accepted": 230}
    log = mp_state(mp).requests_log
    assert all(r["bytes"] < MAX_REQUEST_BYTES and r["batches"] <= 100 for r in log)
    assert any(r["batches"] < 100 and r["bytes"] > MAX_REQUEST_BYTES - 8000 for r in log)
    assert any(r["batches"] == 100 for r in log)
    assert sum(r["batches"] for r in log) == 230


def test_pack_requests_keeps_one_batch_per_user_per_request():
    """A user's second batch waits for the next request, so its corrections stay in order."""
    out = list(pack_requests([Outgoing(str(i), BULK_PATH, "u" if i < 2 else f"v{i}", b"{}")
                              for i in range(4)]))
    assert [[b.batch_id for b in g] for g in out] == [["0"], ["1", "2", "3"]]


# -- answers --------------------------------------------------------------------------------


def test_wrong_credentials_stop_the_run_with_exit_3_and_a_rerun_resends_only_mparticle(
        mp, tmp_path):
    """403: exit 3, mParticle rows stay pending; the fixed rerun never resends to Usermaven."""
    sheet = both_targets_sheet(tmp_path)
    first = run(sheet, tmp_path, mp, setup=setup_for(mp, secret="wrong"))
    assert first.exit_code == 3
    assert "MPARTICLE_API_KEY" in first.mparticle.fatal
    assert first.by_target == {"usermaven": {"applied": 4}, "mparticle": {"pending": 4}}
    assert mp_state(mp).counts["batches_accepted"] == 0
    mutations = mp.stats()["requests"]["mutation"]
    second = run(sheet, tmp_path, mp)
    assert second.exit_code == 0 and second.result.requests == 0
    assert mp.stats()["requests"]["mutation"] == mutations
    assert mp.stats()["mparticle"]["messages_twice"] == []
    assert len(mp.stats()["mparticle"]["messages"]) == 4


def test_missing_mparticle_credentials_are_a_usage_error(mp, tmp_path):
    """No MPARTICLE_API_KEY/SECRET: exit 2 before anything is sent."""
    sheet = write_csv(tmp_path / "s.csv", event_rows(1))
    res = run_cli(["apply", str(sheet), "--target", "mparticle", "--mparticle-url", mp.url],
                  env={"MPARTICLE_API_KEY": "", "MPARTICLE_API_SECRET": ""})
    assert res.returncode == 2 and "MPARTICLE_API_KEY" in res.stderr
    assert mp_state(mp).counts == {}


def test_a_400_marks_the_row_rejected_with_mparticles_message(mp, tmp_path):
    """A server stricter than our offline checks: 400 → `rejected` with its error, not resent."""
    mp_state(mp).limits.max_event_attributes = 3  # final_price + 2 references fit; note not
    sheet = write_csv(tmp_path / "s.csv", event_rows(1, **{"set.note": "x"}))
    out = run(sheet, tmp_path, mp, usermaven=False)
    line = lines_of(out)[0]
    assert line["status"] == "rejected" and line["http_status"] == "400"
    assert "BAD_REQUEST" in line["error"] and "holds 4 attributes; at most 3" in line["error"]
    assert out.exit_code == 1
    again = run(sheet, tmp_path, mp, usermaven=False)
    assert again.mparticle.requests == 0


def test_one_bad_batch_among_many_is_the_only_one_rejected(mp, tmp_path):
    """202 with errors naming a batch: that batch is rejected, the others accepted."""
    mp_state(mp).limits.max_event_attributes = 3
    rows = event_rows(3) + event_rows(1, start=3, **{"set.note": "x"})
    out = run(write_csv(tmp_path / "s.csv", rows), tmp_path, mp, usermaven=False)
    assert [r["status"] for r in lines_of(out)] == ["accepted"] * 3 + ["rejected"]
    assert mp_state(mp).counts["batches_accepted"] == 3


def mock(handler, tmp_path: Path, rows: list[dict[str, str]], **options: Any) -> ApplyOutcome:
    """mParticle alone against a scripted server; every batch sent is schema-checked."""
    schema = published_schema()  # before the run: a missing schema skips here, not mid-request

    def checked(request: httpx.Request) -> httpx.Response:
        for batch in json.loads(request.content):
            assert schema_errors(schema, batch) == [], batch
        return handler(request)

    sheet = write_csv(tmp_path / "s.csv", rows)
    return run(sheet, tmp_path, None, usermaven=False,
               setup=setup_for(None, transport=httpx.MockTransport(checked)), **options)


def test_429_retry_after_pauses_every_worker_and_logs_the_limit_hit(tmp_path):
    """After a 429 with Retry-After: 1, no request starts for that second; the header is logged."""
    sent: list[float] = []
    throttled: list[float] = []
    records: list[logging.LogRecord] = []
    handler_ = logging.Handler()
    handler_.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("corrections").addHandler(handler_)

    def handler(request: httpx.Request) -> httpx.Response:
        now = time.monotonic()
        sent.append(now)
        if not throttled:
            throttled.append(now)
            return httpx.Response(429, headers={"Retry-After": "1",
                                                "X-mp-rate-limit-exceeded": "account"})
        return httpx.Response(202)

    try:
        out = mock(handler, tmp_path, event_rows(600), concurrency=2)
    finally:
        logging.getLogger("corrections").removeHandler(handler_)
    assert out.by_target["mparticle"] == {"accepted": 600}
    t0 = throttled[0]
    assert [t for t in sent if t0 + 0.05 < t < t0 + 1.0] == []
    assert max(sent) >= t0 + 1.0
    assert out.mparticle.throttled == 1
    assert any("X-mp-rate-limit-exceeded: account" in r.getMessage() for r in records)


def test_503_and_5xx_are_retried_with_backoff_then_accepted(tmp_path):
    """Two 5xx answers, then 202: accepted after 3 attempts, with the same body each time."""
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response([503, 500, 202][len(bodies) - 1])

    out = mock(handler, tmp_path, event_rows(1))
    line = lines_of(out)[0]
    assert line["status"] == "accepted" and line["attempts"] == "3"
    assert len(set(bodies)) == 1


def test_exhausted_retries_mark_failed_and_the_rerun_resends_the_same_batch(tmp_path):
    """500 until --max-attempts: `failed`; the next run sends byte-for-byte the same batch."""
    bodies: list[bytes] = []
    status = [500]

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response(status[0])

    first = lines_of(mock(handler, tmp_path, event_rows(2), max_attempts=2))
    assert [r["status"] for r in first] == ["failed", "failed"]
    assert first[0]["http_status"] == "500" and first[0]["attempts"] == "2"
    status[0] = 202
    second = lines_of(mock(handler, tmp_path, event_rows(2), max_attempts=2))
    assert [r["status"] for r in second] == ["accepted", "accepted"]
    assert second[0]["attempts"] == "3"
    assert len(set(bodies)) == 1 and len(bodies) == 3


def test_injected_faults_never_count_a_message_twice(mp, tmp_path):
    """Cut connections after the batch was kept are resent and dropped as duplicates."""
    mp.set_faults(seed=11, rate_apply_then_cut=0.3, rate_cut=0.1, rate_500=0.1, rate_503=0.1,
                  rate_429=0.05, retry_after=0)
    # fixed, old event times: the same bodies every day, so the seeded faults are the same
    rows = [dict(r, timestamp="2020-01-15T00:00:00Z") for r in event_rows(600)]
    out = run(write_csv(tmp_path / "s.csv", rows), tmp_path, mp, usermaven=False,
              max_attempts=20)
    stats = mp.stats()
    assert out.by_target["mparticle"] == {"accepted": 600}
    assert stats["faults"].get("apply_then_cut", 0) > 0
    assert stats["mparticle"]["duplicates_dropped"] > 0
    assert stats["mparticle"]["messages_twice"] == []
    assert len(stats["mparticle"]["messages"]) == 600


# -- plan -----------------------------------------------------------------------------------


def test_plan_builds_and_routes_batches_but_sends_nothing(mp, tmp_path):
    """`plan` with mParticle: lines `planned` with their endpoint; no mParticle request."""
    out = plan_sheet(SheetJob(both_targets_sheet(tmp_path)),
                     Target(mp.url, SANDBOX_TOKEN, mp.url), RunOptions(**FAST),
                     report=tmp_path / "plan.csv", mparticle=setup_for(mp, secret=""))
    lines = lines_of(out)
    assert {r["status"] for r in lines} == {"planned"}
    assert all(r["endpoint"] for r in lines)
    assert mp_state(mp).counts == {} and mp.stats()["requests"]["mutation"] == 0
    assert out.exit_code == 0


# -- command line and crash/resume ----------------------------------------------------------


def cli_args(sheet: Path, sandbox: SandboxServer, tmp_path: Path, *more: str) -> list[str]:
    return ["apply", str(sheet), "--api-url", sandbox.url, "--mparticle-url", sandbox.url,
            "--checkpoint", str(tmp_path / "cp.sqlite"), "--report",
            str(tmp_path / "audit.csv"), *more]


def test_the_command_line_sends_to_both_targets_and_never_shows_the_secret(mp, tmp_path):
    """`--target usermaven --target mparticle`: exit 0, per-target summary, secret nowhere."""
    sheet = both_targets_sheet(tmp_path)
    res = run_cli(cli_args(sheet, mp, tmp_path, "--target", "usermaven", "--target",
                           "mparticle"), env=MP_ENV)
    assert res.returncode == 0, res.stderr
    assert "mparticle:" in res.stdout and "accepted" in res.stdout
    for blob in (res.stdout, res.stderr, (tmp_path / "audit.csv").read_text(),
                 (tmp_path / "cp.sqlite").read_bytes().decode("latin-1")):
        assert SANDBOX_MP_SECRET not in blob
    status = run_cli(["status", "--checkpoint", str(tmp_path / "cp.sqlite")])
    assert "mparticle rows by status" in status.stdout
    again = run_cli(["report", "--checkpoint", str(tmp_path / "cp.sqlite"), "--out",
                     str(tmp_path / "again.jsonl")])
    assert again.returncode == 0
    lines = [json.loads(x) for x in (tmp_path / "again.jsonl").read_text().splitlines()]
    assert {x["target"] for x in lines} == {"usermaven", "mparticle"}


def test_targets_can_come_from_the_config_file(mp, tmp_path):
    """`target = [...]` and `mparticle-as` in corrections.toml work like the options."""
    config = tmp_path / "c.toml"
    config.write_text('target = ["mparticle"]\nmparticle-as = "user-attributes"\n')
    sheet = write_csv(tmp_path / "s.csv", event_rows(1))
    res = run_cli(cli_args(sheet, mp, tmp_path, "--config", str(config)), env=MP_ENV)
    assert res.returncode == 0, res.stderr
    assert mp.stats()["requests"]["mutation"] == 0
    assert "user_attributes" in mp_state(mp).batches_received()[0]["batch"]


def test_the_embedded_sandbox_serves_both_targets(tmp_path):
    """`--sandbox` points both targets at one emulator: zero setup."""
    sheet = both_targets_sheet(tmp_path)
    res = run_cli(["apply", str(sheet), "--sandbox", "--target", "usermaven", "--target",
                   "mparticle", "--checkpoint", str(tmp_path / "cp.sqlite"), "--report",
                   str(tmp_path / "a.csv")])
    assert res.returncode == 0, res.stderr
    lines = read_report(tmp_path / "a.csv")
    assert {(r["target"], r["status"]) for r in lines} == {("usermaven", "applied"),
                                                          ("mparticle", "accepted")}


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("USERMAVEN_")}, **MP_ENV}
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _accepted_batches(cp: Path) -> set[str]:
    db = sqlite3.connect(cp)
    try:
        return {r[0] for r in db.execute(
            "SELECT batch_id FROM delivery_batches WHERE status = 'accepted'")}
    except sqlite3.OperationalError:
        return set()
    finally:
        db.close()


def test_sigkill_after_mparticle_kept_a_request_then_rerun_counts_nothing_twice(mp, tmp_path):
    """Killed before the 202 was recorded: the rerun resends, mParticle drops the duplicates."""
    sheet = write_csv(tmp_path / "s.csv", event_rows(250))
    state = mp_state(mp)
    state.answer_delay = 3.0
    proc = _spawn(cli_args(sheet, mp, tmp_path, "--target", "mparticle", "--concurrency", "1"))
    try:
        _wait_for(lambda: state.counts["batches_accepted"] >= 100)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert _accepted_batches(tmp_path / "cp.sqlite") == set()
    state.answer_delay = 0.0
    res = run_cli(cli_args(sheet, mp, tmp_path, "--target", "mparticle"), env=MP_ENV)
    assert res.returncode == 0, res.stderr
    stats = mp.stats()["mparticle"]
    assert stats["duplicates_dropped"] == 100
    assert stats["messages_twice"] == [] and len(stats["messages"]) == 250


def test_sigkill_mid_run_then_rerun_resends_nothing_already_accepted(mp, tmp_path):
    """Batches recorded accepted before SIGKILL are never sent again by the rerun."""
    sheet = write_csv(tmp_path / "s.csv", event_rows(250))
    mp.set_faults(latency_ms=600)
    proc = _spawn(cli_args(sheet, mp, tmp_path, "--target", "mparticle", "--concurrency", "1"))
    try:
        _wait_for(lambda: len(_accepted_batches(tmp_path / "cp.sqlite")) >= 100)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    done_before = _accepted_batches(tmp_path / "cp.sqlite")
    assert 100 <= len(done_before) < 250
    seen = len(mp_state(mp).batches_received())
    mp.set_faults(latency_ms=0)
    res = run_cli(cli_args(sheet, mp, tmp_path, "--target", "mparticle"), env=MP_ENV)
    assert res.returncode == 0, res.stderr
    resent = {r["batch"]["source_request_id"]
              for r in mp_state(mp).batches_received()[seen:]}
    assert resent and not resent & done_before
    stats = mp.stats()["mparticle"]
    assert stats["messages_twice"] == [] and len(stats["messages"]) == 250


# -- pods -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("pod", "url", "expected"), [
    ("US1", None, "https://s2s.us1.mparticle.com"),
    ("eu1", None, "https://s2s.eu1.mparticle.com"),
    ("AU1", None, "https://s2s.au1.mparticle.com"),
    ("US2", None, "https://s2s.us2.mparticle.com"),
    (None, "https://s2s.mparticle.com/v2", "https://s2s.mparticle.com"),
    (None, "http://127.0.0.1:8787/", "http://127.0.0.1:8787"),
])
def test_pods_by_name_or_a_base_url(pod, url, expected):
    """Pod names map to their documented hosts; a URL may carry the /v2 suffix."""
    assert base_url(pod, url) == expected


def test_plain_http_to_a_remote_mparticle_is_refused():
    """The key and secret would travel in clear."""
    from pipeline.errors import UsageError

    with pytest.raises(UsageError, match="--mparticle-url"):
        base_url(None, "http://s2s.mparticle.com")


def test_sigterm_during_mparticle_sends_stops_cleanly_and_the_rerun_finishes(mp, tmp_path):
    """SIGTERM: in-flight requests finish, exit 143, every row in the report; rerun → exit 0."""
    sheet = write_csv(tmp_path / "s.csv", event_rows(250))
    mp.set_faults(latency_ms=500)
    proc = _spawn(cli_args(sheet, mp, tmp_path, "--target", "mparticle", "--concurrency", "1"))
    _wait_for(lambda: mp_state(mp).counts["bulkevents"] >= 1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "stopping" in err
    lines = read_report(tmp_path / "audit.csv")
    assert len(lines) == 250 and "pending" in {r["status"] for r in lines}
    mp.set_faults(latency_ms=0)
    res = run_cli(cli_args(sheet, mp, tmp_path, "--target", "mparticle"), env=MP_ENV)
    assert res.returncode == 0, res.stderr
    assert mp.stats()["mparticle"]["messages_twice"] == []


def test_strict_refuses_to_send_when_a_row_is_invalid_for_mparticle(mp, tmp_path):
    """--strict counts mParticle's offline problems too: exit 2, nothing sent anywhere."""
    sheet = write_csv(tmp_path / "s.csv", event_rows(1) + [
        {**event_rows(1, start=1)[0], "identity.customer_id": ""}])
    res = run_cli(cli_args(sheet, mp, tmp_path, "--target", "usermaven", "--target",
                           "mparticle", "--strict"), env=MP_ENV)
    assert res.returncode == 2 and "row 3" in res.stderr and "mparticle: no user" in res.stderr
    assert mp.stats()["requests"]["mutation"] == 0 and mp_state(mp).counts == {}


def test_an_explicit_key_on_two_events_does_not_make_a_false_duplicate(mp, tmp_path):
    """mParticle alone cannot see key reuse, so a sheet key is made unique per event."""
    rows = [dict(r, idempotency_key="fix-1") for r in event_rows(2)]
    out = run(write_csv(tmp_path / "s.csv", rows), tmp_path, mp, usermaven=False)
    lines = lines_of(out)
    assert [r["status"] for r in lines] == ["accepted", "accepted"]
    assert lines[0]["source_message_id"] != lines[1]["source_message_id"]
    assert all(r["idempotency_key"].startswith("fix-1-") for r in lines)


def test_a_missing_authorization_answer_401_is_fatal_too(tmp_path):
    """401 (header missing, per the reference) stops the run like 403: exit 3, rows pending."""
    out = mock(lambda request: httpx.Response(401), tmp_path, event_rows(3))
    assert out.exit_code == 3 and out.by_target["mparticle"] == {"pending": 3}
    assert "authentication missing" in out.mparticle.fatal
