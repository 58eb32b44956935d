"""Resolution outcomes: full pages, lookup budgets, answers that do not match the query, and
lookup timestamps in shapes the API does not document."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import read_report, run_cli, write_csv
from crafted import (
    BASE,
    JsonServer,
    crafted_sandbox,
    eid,
    event,
    mutation_ok,
    order_row,
    run_apply,
)

from pipeline.sandbox.server import SANDBOX_TOKEN
from pipeline.targets.usermaven.resolve import MAX_LOOKUPS_PER_ROW
from pipeline.throttle import Throttle


def only_line(report: Any) -> dict[str, str]:
    lines = read_report(report)
    assert len(lines) == 1, lines
    return lines[0]


# -- full pages ------------------------------------------------------------------------------


def test_a_full_page_of_deleted_events_does_not_hide_an_older_live_match(tmp_path):
    """With --on-multiple fail, 9 deleted + 1 live on the first page and an older live match
    beyond it make the row ambiguous, and nothing is mutated."""
    events = [event(i, {"order_id": "ORD-1"}, minutes_ago=i, deleted=True) for i in range(1, 10)]
    events += [event(20, {"order_id": "ORD-1"}, minutes_ago=0),
               event(21, {"order_id": "ORD-1"}, minutes_ago=600)]
    sheet = write_csv(tmp_path / "s.csv", [order_row("ORD-1")])
    with crafted_sandbox(events) as sb:
        out = run_apply(sb.url, sheet, tmp_path)
        assert sum(sb.store.applications.values()) == 0
    line = only_line(out.report)
    assert line["status"] == "ambiguous"
    assert "2 events match" in line["error"]
    assert eid(20) in line["error"] and eid(21) in line["error"]
    assert out.exit_code == 1


def test_newest_finds_the_newest_live_event_behind_a_page_of_deleted_ones(tmp_path):
    """With --on-multiple newest, ten newer deleted events do not make the row not_found: the
    newest live event beyond them is the one changed."""
    events = [event(i, {"order_id": "ORD-1"}, minutes_ago=i, deleted=True) for i in range(1, 11)]
    events += [event(30, {"order_id": "ORD-1", "final_price": "1"}, minutes_ago=300),
               event(31, {"order_id": "ORD-1", "final_price": "1"}, minutes_ago=900)]
    sheet = write_csv(tmp_path / "s.csv", [order_row("ORD-1", "42.00")])
    with crafted_sandbox(events) as sb:
        out = run_apply(sb.url, sheet, tmp_path, on_multiple="newest")
        assert sb.store.get(eid(30)).attributes["final_price"] == "42.00"
        assert sb.store.get(eid(31)).attributes["final_price"] == "1"
    line = only_line(out.report)
    assert line["status"] == "applied" and line["event_id"] == eid(30)
    assert out.exit_code == 0


def test_an_ambiguous_row_names_the_true_number_of_matches_beyond_a_full_page(tmp_path):
    """Twelve live matches are reported as twelve, never as the page size of ten."""
    events = [event(i, {"order_id": "ORD-1"}, minutes_ago=7 * i) for i in range(12)]
    sheet = write_csv(tmp_path / "s.csv", [order_row("ORD-1")])
    with crafted_sandbox(events) as sb:
        out = run_apply(sb.url, sheet, tmp_path)
        assert sum(sb.store.applications.values()) == 0
    line = only_line(out.report)
    assert line["status"] == "ambiguous"
    assert "12 events match" in line["error"] and "10 events" not in line["error"]


def test_all_mode_changes_every_live_match_beyond_a_full_page(tmp_path):
    """With --on-multiple all, every one of 14 live matches behind deleted ones is changed."""
    events = [event(i, {"order_id": "ORD-1"}, minutes_ago=i, deleted=True) for i in range(1, 8)]
    events += [event(100 + i, {"order_id": "ORD-1"}, minutes_ago=60 + 13 * i) for i in range(14)]
    sheet = write_csv(tmp_path / "s.csv", [order_row("ORD-1", "5.00")])
    with crafted_sandbox(events) as sb:
        out = run_apply(sb.url, sheet, tmp_path, on_multiple="all")
        changed = [i for i in range(14)
                   if sb.store.get(eid(100 + i)).attributes.get("final_price") == "5.00"]
    assert len(changed) == 14
    assert {r["status"] for r in read_report(out.report)} == {"applied"}


# -- budgets ---------------------------------------------------------------------------------


def _always(n: int) -> JsonServer:
    """A server answering every lookup with `n` matching events (more than the API's 10 when
    n > 10), spread over the queried window."""
    def answer(path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if path.endswith("/lookup"):
            start = body["from_timestamp"][:19].replace("T", " ")
            return 200, {"data": [
                {"event_id": eid(i), "event_type": body["event_type"],
                 "event_attributes": {body["attribute_key"]: body["attribute_value"]},
                 "_timestamp": start, "_is_deleted": 0} for i in range(n)]}
        return mutation_ok(body)
    return JsonServer(answer)


@pytest.mark.parametrize("page", [10, 11, 25])
def test_a_server_that_never_answers_a_short_page_ends_the_row_ambiguous_within_a_budget(
        tmp_path, page):
    """Pages that stay full (or exceed the documented 10) end the row ambiguous with the reason,
    after a bounded number of lookups, and nothing is mutated."""
    sheet = write_csv(tmp_path / "s.csv", [order_row("ORD-1"), order_row("ORD-2")])
    with _always(page) as srv:
        out = run_apply(srv.url, sheet, tmp_path, on_multiple="all", timeout=10)
        lookups, mutations = srv.count("/lookup"), srv.mutations
    assert mutations == 0
    assert lookups <= 2 * MAX_LOOKUPS_PER_ROW
    lines = read_report(out.report)
    assert [r["status"] for r in lines] == ["ambiguous", "ambiguous"]
    assert all("lookups" in r["error"] or "cannot list" in r["error"] for r in lines)
    assert out.exit_code == 1


@pytest.mark.parametrize("mode", ["fail", "newest", "all"])
def test_more_than_ten_events_at_one_instant_end_the_row_ambiguous_with_the_reason(
        tmp_path, mode):
    """Eleven matches with one identical timestamp cannot all be listed: the row is ambiguous,
    says why, and the lookups stop at the smallest slice."""
    events = [event(i, {"order_id": "ORD-1"}, at=BASE) for i in range(11)]
    sheet = write_csv(tmp_path / "s.csv", [order_row("ORD-1")])
    with crafted_sandbox(events) as sb:
        out = run_apply(sb.url, sheet, tmp_path, on_multiple=mode)
        assert sum(sb.store.applications.values()) == 0
        assert sb.stats()["requests"]["lookup"] <= MAX_LOOKUPS_PER_ROW
    line = only_line(out.report)
    assert line["status"] == "ambiguous"
    assert "more than 10" in line["error"]


def test_cancelled_waiters_leave_the_throttle_handing_out_every_slot():
    """Waiters cancelled while queued (or just after being handed a slot) leave the throttle
    consistent: later requests still get all its slots, and none is leaked."""
    async def scenario() -> tuple[int, int]:
        throttle = Throttle(2)
        release = asyncio.Event()
        entered = 0

        async def hold() -> None:
            nonlocal entered
            async with throttle.slot():
                entered += 1
                await release.wait()

        holders = [asyncio.create_task(hold()) for _ in range(2)]
        await asyncio.sleep(0.01)
        waiters = [asyncio.create_task(hold()) for _ in range(6)]
        await asyncio.sleep(0.01)
        waiters[0].cancel()
        waiters[3].cancel()
        release.set()        # holders leave and hand their places to the queue head ...
        waiters[1].cancel()  # ... which is cancelled before it runs
        waiters[2].cancel()
        await asyncio.gather(*holders, *waiters, return_exceptions=True)
        assert throttle.in_flight == 0
        release.clear()
        fresh = [asyncio.create_task(hold()) for _ in range(3)]
        await asyncio.sleep(0.01)
        running = throttle.in_flight
        release.set()
        await asyncio.wait_for(asyncio.gather(*fresh), timeout=5)
        return running, throttle.in_flight

    running, after = asyncio.run(scenario())
    assert running == 2
    assert after == 0


# -- answers that do not match the query -----------------------------------------------------


def _answering(item: dict[str, Any]) -> JsonServer:
    def answer(path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if path.endswith("/lookup"):
            return 200, {"data": [item]}
        return mutation_ok(body)
    return JsonServer(answer)


@pytest.mark.parametrize("item, what", [
    ({"event_type": "order_refunded", "event_attributes": {"order_id": "ORD-1"}},
     "event_type"),
    ({"event_type": "order_completed", "event_attributes": {"order_id": "ORD-77"}},
     "order_id"),
    ({"event_type": "order_completed", "event_attributes": {"price": "1"}}, "order_id"),
    ({"event_type": "order_completed", "event_attributes": {"order_id": "ord-1"}},
     "order_id"),
])
def test_a_lookup_result_that_does_not_match_the_query_is_never_mutated(tmp_path, item, what):
    """An event whose type or lookup value differs from the query is not trusted: nothing is
    sent, and the row stays failed (retryable) with a message naming the mismatch."""
    answer = {"event_id": eid(1), "_timestamp": "2026-03-10 10:00:00", "_is_deleted": 0, **item}
    sheet = write_csv(tmp_path / "s.csv", [order_row("ORD-1")])
    with _answering(answer) as srv:
        out = run_apply(srv.url, sheet, tmp_path)
        assert srv.mutations == 0
    line = only_line(out.report)
    assert line["status"] == "failed"
    assert "does not match the query" in line["error"] and what in line["error"]
    assert out.exit_code == 1


def test_a_numeric_attribute_matches_its_text_form_as_the_api_compares_it(tmp_path):
    """The API compares an attribute as text: an event holding 1001 is the match for "1001"."""
    events = [event(1, {"order_id": 1001})]
    sheet = write_csv(tmp_path / "s.csv", [order_row("1001", "3.00")])
    with crafted_sandbox(events) as sb:
        out = run_apply(sb.url, sheet, tmp_path)
        assert sb.store.get(eid(1)).attributes["final_price"] == "3.00"
    assert only_line(out.report)["status"] == "applied"


def test_an_event_outside_the_queried_window_is_not_trusted(tmp_path):
    """A lookup answer with an event from another month is refused and nothing is sent."""
    answer = {"event_id": eid(1), "event_type": "order_completed",
              "event_attributes": {"order_id": "ORD-1"}, "_timestamp": "2025-07-10 10:00:00",
              "_is_deleted": 0}
    sheet = write_csv(tmp_path / "s.csv", [order_row("ORD-1")])
    with _answering(answer) as srv:
        out = run_apply(srv.url, sheet, tmp_path)
        assert srv.mutations == 0
    line = only_line(out.report)
    assert line["status"] == "failed" and "window" in line["error"]


# -- timestamps in undocumented shapes -------------------------------------------------------


@pytest.mark.parametrize("stamp", [1773136800, "1773136800", "03/10/2026 10:00:00",
                                   "Tue, 10 Mar 2026 10:00:00 +0000", None, "", [2026, 3]])
def test_a_lookup_timestamp_in_another_shape_is_refused_and_rows_stay_retryable(
        tmp_path, stamp):
    """`_timestamp` as an epoch number, a US date, RFC 2822 or missing: no traceback, no hang,
    nothing sent, every row of a 200-row sheet stays retryable and the report is written."""
    def answer(path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if path.endswith("/lookup"):
            item = {"event_id": eid(1), "event_type": body["event_type"],
                    "event_attributes": {body["attribute_key"]: body["attribute_value"]},
                    "_is_deleted": 0}
            if stamp is not None:
                item["_timestamp"] = stamp
            return 200, {"data": [item]}
        return mutation_ok(body)

    rows = [order_row(f"ORD-{i}") for i in range(200)]
    sheet = write_csv(tmp_path / "s.csv", rows)
    report = tmp_path / "audit.csv"
    with JsonServer(answer) as srv:
        proc = run_cli(["apply", str(sheet), "--api-url", srv.url, "--report", str(report),
                        "--checkpoint", str(tmp_path / "cp.sqlite"), "--backoff-base", "0.001",
                        "--backoff-max", "0.01", "--max-attempts", "2"],
                       env={"USERMAVEN_TOKEN": SANDBOX_TOKEN}, timeout=90)
        assert srv.mutations == 0
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = read_report(report)
    assert len(lines) == 200
    assert {r["status"] for r in lines} <= {"failed", "pending"}
    assert all("_timestamp" in r["error"] for r in lines)
