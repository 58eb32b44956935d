"""`corrections apply`: the whole job against the sandbox on a real loopback port."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE, read_report, write_csv

from pipeline.jobs import ApplyOutcome, SheetJob, Target, apply_sheet
from pipeline.model import SheetDefaults
from pipeline.run_types import RunOptions
from pipeline.sandbox.server import SANDBOX_TOKEN, SandboxServer

#: What the sample sheet's rows must end as (row number → status), per its comments.
SAMPLE_EXPECTED = {
    **{n: "applied" for n in range(2, 17)},
    17: "unchanged", 18: "duplicate", 19: "invalid", 20: "invalid", 21: "invalid",
    22: "not_found", 23: "not_found", 24: "not_found", 25: "ambiguous", 26: "conflict",
    27: "rejected",
}
FAST = {"backoff_base": 0.001, "backoff_max": 0.01}


def apply(sheet: Path, sandbox: SandboxServer, tmp_path: Path, *,
          defaults: SheetDefaults | None = None, report: str = "audit.csv",
          **options: Any) -> ApplyOutcome:
    target = Target(sandbox.url, SANDBOX_TOKEN, sandbox.url)
    return apply_sheet(SheetJob(sheet, defaults or SheetDefaults()), target,
                       RunOptions(**{**FAST, **options}), checkpoint=tmp_path / "cp.sqlite",
                       report=tmp_path / report, install_signals=False)


def server_mutation_id(sandbox: SandboxServer, key: str) -> str:
    return sandbox.store._keys[key].response["mutation_id"]


def statuses(report: Path) -> dict[int, str]:
    return {int(r["row_number"]): r["status"] for r in read_report(report)}


def order_rows(*pairs: tuple[str, str], month: str = "2026-09") -> list[dict[str, str]]:
    return [{"event_type": "order_completed", "lookup_key": "order_id", "lookup_value": o,
             "event_time": month, "set.final_price": p} for o, p in pairs]


def test_sample_sheet_reaches_every_documented_status(sandbox, tmp_path):
    """Each sample row ends in the status the API reference and the design say it should."""
    out = apply(SAMPLE / "corrections.csv", sandbox, tmp_path)
    assert statuses(out.report) == SAMPLE_EXPECTED
    assert out.exit_code == 1


def test_every_applied_line_carries_the_mutation_id_the_server_returned(sandbox, tmp_path):
    """The audit report's mutation_id is the server's, for every applied line."""
    out = apply(SAMPLE / "corrections.csv", sandbox, tmp_path)
    applied = [r for r in read_report(out.report) if r["status"] == "applied"]
    assert len(applied) == 15
    for line in applied:
        assert line["mutation_id"] == server_mutation_id(sandbox, line["idempotency_key"])
        assert line["http_status"] == "200" and line["applied_at"]


def test_rerun_sends_no_request_and_applies_nothing_again(sandbox, tmp_path):
    """A second run of the same command finds every row done and sends nothing."""
    apply(SAMPLE / "corrections.csv", sandbox, tmp_path)
    before = sandbox.stats()
    again = apply(SAMPLE / "corrections.csv", sandbox, tmp_path)
    after = sandbox.stats()
    assert after["requests"] == before["requests"]
    assert again.result.requests == 0
    assert statuses(again.report) == SAMPLE_EXPECTED
    assert after["double_applied"] == []


def test_parquet_sheet_gives_the_same_outcome_as_csv(sandbox, tmp_path):
    """The Parquet copy of the sample sheet ends in the same statuses."""
    out = apply(SAMPLE / "corrections.parquet", sandbox, tmp_path)
    assert statuses(out.report) == SAMPLE_EXPECTED


def test_csv_text_reaches_the_api_byte_for_byte(sandbox, tmp_path):
    """CSV cells are text: `00129.50` is sent as the string `00129.50`, not 129.5."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(("ORD-1003", "00129.50"),
                                                     ("ORD-1004", "149.90")))
    apply(sheet, sandbox, tmp_path)
    assert sandbox.store.get("794220c2-b1bf-436b-9c7f-9c0b193e1778").attributes[
        "final_price"] == "00129.50"
    assert sandbox.store.get("9cd4aac5-61ed-49bd-8cf6-04cfe35c6f6f").attributes[
        "final_price"] == "149.90"


def test_apply_then_cut_faults_still_apply_each_key_exactly_once(sandbox, tmp_path):
    """Mutations committed but never answered are resent with the same key: one application."""
    sandbox.set_faults(seed=7, rate_apply_then_cut=0.3, rate_cut=0.1, rate_500=0.1,
                       rate_503=0.05)
    out = apply(SAMPLE / "corrections.csv", sandbox, tmp_path, max_attempts=12)
    stats = sandbox.stats()
    assert stats["faults"]["apply_then_cut"] > 0
    assert stats["double_applied"] == []
    assert all(n == 1 for n in stats["applications"].values())
    assert statuses(out.report) == SAMPLE_EXPECTED
    for line in read_report(out.report):
        if line["status"] == "applied":
            assert line["mutation_id"] == server_mutation_id(sandbox, line["idempotency_key"])


def test_exhausted_retries_mark_failed_and_the_next_run_applies_with_the_same_key(
        sandbox, tmp_path):
    """After --max-attempts 500s a row is `failed`; a rerun resends it under the same key."""
    sheet = write_csv(tmp_path / "s.csv", [{
        "event_id": "518f47a5-985c-4482-8a85-21704f0d50d2", "timestamp": "2026-09-27",
        "set.final_price": "1.00"}])
    sandbox.set_faults(rate_500=1.0)
    first = read_report(apply(sheet, sandbox, tmp_path, max_attempts=3).report)
    assert first[0]["status"] == "failed" and first[0]["attempts"] == "3"
    assert first[0]["http_status"] == "500"
    sandbox.set_faults(rate_500=0.0)
    second = read_report(apply(sheet, sandbox, tmp_path, max_attempts=3).report)
    assert second[0]["status"] == "applied"
    assert second[0]["idempotency_key"] == first[0]["idempotency_key"]
    assert second[0]["attempts"] == "4"


def test_keys_depend_on_content_not_on_row_order(sandbox, tmp_path):
    """Reversing the sheet gives the same row keys and idempotency keys."""
    rows = order_rows(("ORD-1001", "1.00"), ("ORD-1002", "2.00"), ("ORD-1004", "3.00"))
    a = apply(write_csv(tmp_path / "a.csv", rows), sandbox, tmp_path / "a")
    sandbox.reset()
    b = apply(write_csv(tmp_path / "b.csv", rows[::-1]), sandbox, tmp_path / "b")
    keys = lambda out: {(r["row_key"], r["idempotency_key"]) for r in read_report(out.report)}  # noqa: E731
    assert keys(a) == keys(b) and len(keys(a)) == 3


def test_resume_with_a_reordered_and_extended_sheet_sends_only_the_new_row(sandbox, tmp_path):
    """Rows are matched by content, so a shuffled sheet with one new row sends one mutation."""
    rows = order_rows(("ORD-1001", "1.00"), ("ORD-1002", "2.00"))
    apply(write_csv(tmp_path / "s.csv", rows), sandbox, tmp_path)
    more = rows[::-1] + order_rows(("ORD-1004", "3.00"))
    out = apply(write_csv(tmp_path / "s.csv", more), sandbox, tmp_path)
    assert out.result.mutations == 1
    assert out.result.totals.rows_new == 1 and out.result.totals.rows_done == 2
    assert set(statuses(out.report).values()) == {"applied"}


def test_rows_changing_one_event_are_applied_in_sheet_order(sandbox, tmp_path):
    """Three rows on one order land in sheet order; A→B→A is not mistaken for a no-op."""
    sandbox.set_faults(latency_ms=5, latency_jitter_ms=20, seed=3)
    sheet = write_csv(tmp_path / "s.csv", order_rows(
        ("ORD-1001", "120.00"), ("ORD-1001", "99.99"), ("ORD-1002", "1.00"),
    ) + [{"event_type": "order_completed", "lookup_key": "order_id", "lookup_value": "ORD-1001",
          "event_time": "2026-09", "set.final_price": "130.00", "set.discount_code": "Z"}])
    out = apply(sheet, sandbox, tmp_path, concurrency=16)
    assert set(statuses(out.report).values()) == {"applied"}
    event = sandbox.store.get("518f47a5-985c-4482-8a85-21704f0d50d2")
    assert event.attributes["final_price"] == "130.00"
    assert event.attributes["discount_code"] == "Z"


def test_on_multiple_newest_takes_the_newest_match(sandbox, tmp_path):
    """`--on-multiple newest` mutates only the newest of ORD-1042's two events."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(("ORD-1042", "189.00"), month="2026-10"))
    out = apply(sheet, sandbox, tmp_path, on_multiple="newest")
    lines = read_report(out.report)
    assert [(r["event_id"], r["status"]) for r in lines] == [
        ("d8437fa2-10ea-4414-9004-2dcd95c4a8aa", "applied")]


def test_on_multiple_all_mutates_every_match_with_one_key_each(sandbox, tmp_path):
    """`--on-multiple all` gives one report line and one distinct key per matching event."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(("ORD-1042", "189.00"), month="2026-10"))
    lines = read_report(apply(sheet, sandbox, tmp_path, on_multiple="all").report)
    assert {r["status"] for r in lines} == {"applied"}
    assert len({r["idempotency_key"] for r in lines}) == 2
    assert {r["row_number"] for r in lines} == {"2"}


def test_on_multiple_all_splits_full_windows_so_no_match_is_missed(sandbox, tmp_path):
    """14 events share one value: the 10-event page is split until every slice is complete."""
    sheet = write_csv(tmp_path / "s.csv", [{
        "event_type": "campaign_touch", "lookup_key": "campaign", "lookup_value": "black-friday",
        "event_time": "2026-10", "set.channel": "paid-search"}])
    out = apply(sheet, sandbox, tmp_path, on_multiple="all")
    lines = read_report(out.report)
    assert len(lines) == 14 and {r["status"] for r in lines} == {"applied"}
    assert out.result.lookups > 1


def test_identical_lookups_are_made_once_per_run(sandbox, tmp_path):
    """Three rows with the same lookup make one lookup request."""
    rows = [{"event_type": "order_completed", "lookup_key": "order_id", "lookup_value": "ORD-1002",
             "event_time": "2026-09", f"set.{name}": "x"} for name in ("a", "b", "c")]
    out = apply(write_csv(tmp_path / "s.csv", rows), sandbox, tmp_path)
    assert out.result.lookups == 1
    assert sandbox.stats()["requests"]["lookup"] == 1


def test_an_event_already_holding_the_values_is_unchanged_and_not_sent(sandbox, tmp_path):
    """No-op skip: ORD-1007 already costs 149.99, so no mutation is sent."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(("ORD-1007", "149.99")))
    out = apply(sheet, sandbox, tmp_path)
    assert statuses(out.report) == {2: "unchanged"}
    assert sandbox.stats()["requests"]["mutation"] == 0
    assert out.exit_code == 0


def test_deleted_events_are_never_mutated(sandbox, tmp_path):
    """ORD-1013's only event is deleted: the row is not_found and nothing is sent."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(("ORD-1013", "1.00")))
    out = apply(sheet, sandbox, tmp_path)
    line = read_report(out.report)[0]
    assert line["status"] == "not_found" and "deleted" in line["error"]
    assert sandbox.stats()["requests"]["mutation"] == 0


def test_explicit_key_shared_by_two_events_is_suffixed_per_event(sandbox, tmp_path):
    """A sheet key used on two events gets a per-event suffix on both instead of a 409."""
    rows = [dict(r, idempotency_key="fix-2026-11") for r in
            order_rows(("ORD-1001", "1.00"), ("ORD-1002", "2.00"))]
    lines = read_report(apply(write_csv(tmp_path / "s.csv", rows), sandbox, tmp_path).report)
    assert [r["status"] for r in lines] == ["applied", "applied"]
    assert all(r["idempotency_key"].startswith("fix-2026-11-") for r in lines)
    assert lines[0]["idempotency_key"] != lines[1]["idempotency_key"]


def test_key_namespace_starts_a_fresh_key_space(sandbox, tmp_path):
    """The same change under another --key-namespace gets another idempotency key."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(("ORD-1001", "1.00")))
    a = read_report(apply(sheet, sandbox, tmp_path / "a").report)[0]["idempotency_key"]
    b = read_report(apply(sheet, sandbox, tmp_path / "b", key_namespace="redo").report)[0][
        "idempotency_key"]
    assert a != b and a.startswith("corr-v1-") and len(a) <= 64


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_report_formats_hold_the_same_lines(sandbox, tmp_path, suffix):
    """Parquet and JSON-lines reports carry the same rows and columns as the CSV one."""
    out = apply(SAMPLE / "corrections.csv", sandbox, tmp_path, report="audit" + suffix)
    if suffix == ".parquet":
        rows = pq.read_table(out.report).to_pylist()
    else:
        rows = [json.loads(line) for line in out.report.read_text().splitlines()]
    assert {r["row_number"]: r["status"] for r in rows} == SAMPLE_EXPECTED
    assert list(rows[0]) == list(read_report_columns())


def read_report_columns() -> list[str]:
    from pipeline.report import COLUMNS
    return list(COLUMNS)


def test_parquet_numbers_stay_json_numbers(sandbox, tmp_path):
    """A numeric Parquet column is sent as a JSON number."""
    table = pa.table({"event_type": ["order_completed"], "lookup_key": ["order_id"],
                      "lookup_value": ["ORD-1001"], "event_time": ["2026-09"],
                      "set.items": pa.array([4], pa.int64()),
                      "set.final_price": pa.array([109.5], pa.float64())})
    pq.write_table(table, tmp_path / "s.parquet")
    apply(tmp_path / "s.parquet", sandbox, tmp_path)
    attrs = sandbox.store.get("518f47a5-985c-4482-8a85-21704f0d50d2").attributes
    assert attrs["items"] == 4 and attrs["final_price"] == 109.5


def test_the_report_covers_the_whole_sheet_after_a_resume(sandbox, tmp_path):
    """A rerun's report still lists every row, also those done by the first run."""
    src = tmp_path / "s.csv"
    shutil.copy(SAMPLE / "corrections.csv", src)
    apply(src, sandbox, tmp_path)
    out = apply(src, sandbox, tmp_path)
    assert len(read_report(out.report)) == len(SAMPLE_EXPECTED)


def test_an_explicit_key_on_two_different_changes_of_one_event_applies_both(sandbox, tmp_path):
    """The same sheet key on two different changes of one event: both land, in order."""
    rows = [dict(r, idempotency_key="fix-7") for r in
            order_rows(("ORD-1001", "1.00"), ("ORD-1001", "2.00"))]
    lines = read_report(apply(write_csv(tmp_path / "s.csv", rows), sandbox, tmp_path).report)
    assert [r["status"] for r in lines] == ["applied", "applied"]
    assert lines[0]["idempotency_key"] != lines[1]["idempotency_key"]
    assert all(r["idempotency_key"].startswith("fix-7-") for r in lines)
    assert sandbox.store.get("518f47a5-985c-4482-8a85-21704f0d50d2").attributes[
        "final_price"] == "2.00"


def test_the_same_change_reached_by_two_different_rows_is_sent_once(sandbox, tmp_path):
    """One change to one event, named by event_id in one row and by order id in another."""
    rows = [{"event_id": "518f47a5-985c-4482-8a85-21704f0d50d2", "timestamp": "2026-09-27",
             "set.final_price": "1.00"}] + order_rows(("ORD-1001", "1.00"))
    out = apply(write_csv(tmp_path / "s.csv", rows), sandbox, tmp_path)
    lines = read_report(out.report)
    assert [r["status"] for r in lines] == ["applied", "duplicate"]
    assert "as row 2" in lines[1]["error"]
    assert sandbox.stats()["requests"]["mutation"] == 1


def as_if_answers_were_lost_long_ago(checkpoint: Path) -> None:
    """Turn recorded answers back into intents sent long ago and never answered."""
    import sqlite3

    db = sqlite3.connect(checkpoint)
    db.execute("UPDATE mutations SET status = 'pending', mutation_id = NULL, "
               "intent_at = '2026-01-01T00:00:00+00:00'")
    db.execute("UPDATE rows SET status = 'pending'")
    db.commit()
    db.close()


def test_an_unanswered_intent_past_the_key_lifetime_is_reconciled_not_resent(sandbox, tmp_path):
    """Key TTL: an old unanswered intent whose change is visible is recorded, not resent."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(("ORD-1001", "1.00"), ("ORD-1002", "2.00")))
    apply(sheet, sandbox, tmp_path)
    # as if the run died after sending, before the answer, two days ago ...
    as_if_answers_were_lost_long_ago(tmp_path / "cp.sqlite")
    # ... and the API has since forgotten its keys: resending would apply twice
    sandbox.store.forget_keys()
    out = apply(sheet, sandbox, tmp_path)
    lines = read_report(out.report)
    assert [r["status"] for r in lines] == ["applied", "applied"]
    assert all(r["mutation_id"] == "" and "reconciled" in r["error"] for r in lines)
    assert out.result.mutations == 0
    assert all(n == 1 for n in sandbox.stats()["applications"].values())


def test_an_unanswered_intent_past_the_key_lifetime_is_resent_when_not_visible(
        sandbox, tmp_path):
    """Key TTL: if the old intent's change is not visible, it is resent under its key."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(("ORD-1001", "1.00")))
    apply(sheet, sandbox, tmp_path)
    as_if_answers_were_lost_long_ago(tmp_path / "cp.sqlite")
    sandbox.reset()  # the change never landed, and the key is unknown
    out = apply(sheet, sandbox, tmp_path)
    line = read_report(out.report)[0]
    assert line["status"] == "applied" and line["mutation_id"]
    assert out.result.mutations == 1


def test_a_rerun_of_an_unchanged_finished_sheet_reads_nothing_and_keeps_the_report(
        sandbox, tmp_path, caplog):
    """Same sheet, every row final: no request, the report left as it is (and rewritten
    from the checkpoint if it went missing)."""
    import logging

    sheet = write_csv(tmp_path / "s.csv", order_rows(("ORD-1001", "1.00"), ("ORD-1002", "2.00")))
    first = apply(sheet, sandbox, tmp_path)
    before = first.report.stat().st_mtime_ns, first.report.read_bytes()
    with caplog.at_level(logging.INFO, logger="corrections"):
        again = apply(sheet, sandbox, tmp_path)
    assert "nothing to do" in caplog.text and "is current" in caplog.text
    assert again.result.requests == 0 and again.exit_code == 0
    assert (again.report.stat().st_mtime_ns, again.report.read_bytes()) == before
    again.report.unlink()
    third = apply(sheet, sandbox, tmp_path)
    assert third.report.read_bytes() == before[1]


def test_the_same_sheet_with_other_defaults_is_worked_again(sandbox, tmp_path):
    """Another --merge-mode default changes what the rows mean: no shortcut, new rows."""
    sheet = write_csv(tmp_path / "s.csv", [
        {"event_type": "refund_issued", "lookup_key": "order_id", "lookup_value": "ORD-1044",
         "event_time": "2026-10", "set.amount": "1.00"}])
    apply(sheet, sandbox, tmp_path)
    out = apply(sheet, sandbox, tmp_path, defaults=SheetDefaults(merge_mode="replace"))
    assert out.result.totals.rows_new == 1 and out.result.mutations == 1


def test_formula_looking_sheet_text_is_neutralised_in_the_csv_report(sandbox, tmp_path):
    """A lookup value like =HYPERLINK(...) reaches the report as text a spreadsheet won't run."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(('=HYPERLINK("http://x","y")', "1.00")))
    line = read_report(apply(sheet, sandbox, tmp_path).report)[0]
    assert line["status"] == "not_found"
    assert line["lookup_value"] == '\'=HYPERLINK("http://x","y")'
    assert line["error"].startswith("no order_completed event")


def test_a_change_undone_and_redone_by_later_rows_is_applied_each_time(sandbox, tmp_path):
    """A → B → A on one event: the second A gets its own key and the event ends at A."""
    rows = order_rows(("ORD-1001", "5.00"), ("ORD-1001", "6.00"))
    rows.append({"event_type": "order_completed", "lookup_key": "order_id",
                 "lookup_value": "ORD-1001", "from_timestamp": "2026-09-01",
                 "to_timestamp": "2026-09-29", "set.final_price": "5.00"})
    out = apply(write_csv(tmp_path / "s.csv", rows), sandbox, tmp_path)
    lines = read_report(out.report)
    assert [r["status"] for r in lines] == ["applied", "applied", "applied"]
    assert len({r["idempotency_key"] for r in lines}) == 3
    assert sandbox.store.get("518f47a5-985c-4482-8a85-21704f0d50d2").attributes[
        "final_price"] == "5.00"
