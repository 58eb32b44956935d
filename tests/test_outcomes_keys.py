"""Keys and decisions across runs: edited rows, explicit keys in any order, key namespaces."""

from __future__ import annotations

from typing import Any

from conftest import read_report, write_csv
from crafted import (
    JsonServer,
    crafted_sandbox,
    eid,
    event,
    mutation_ok,
    run_apply,
)


def id_row(n: int, timestamp: str, price: str = "7.00", **extra: str) -> dict[str, str]:
    return {"event_id": eid(n), "timestamp": timestamp, "set.final_price": price, **extra}


def statuses(out: Any) -> list[str]:
    return [r["status"] for r in read_report(out.report)]


# -- edited rows are new corrections ---------------------------------------------------------


def test_a_rejected_row_edited_by_the_user_is_sent_again(tmp_path):
    """A row refused for a wrong-month timestamp (422), then corrected in the sheet, is a new
    correction: it is sent and applied, not reported `duplicate`."""
    with crafted_sandbox([event(1, {"order_id": "ORD-1"})]) as sb:
        sheet = tmp_path / "s.csv"
        first = run_apply(sb.url, write_csv(sheet, [id_row(1, "2026-04-02")]), tmp_path)
        assert statuses(first) == ["rejected"]
        second = run_apply(sb.url, write_csv(sheet, [id_row(1, "2026-03-02")]), tmp_path)
        assert statuses(second) == ["applied"]
        assert sb.store.get(eid(1)).attributes["final_price"] == "7.00"
    assert second.exit_code == 0


def _failing_then_ok(fail_first: int, status: int) -> JsonServer:
    """Mutations answered `status` for the first `fail_first` requests, then applied."""
    seen = {"n": 0}

    def answer(path: str, body: dict[str, Any]) -> tuple[int, Any]:
        seen["n"] += 1
        if seen["n"] <= fail_first:
            return status, {"status": 0, "error": f"answered {status}"}
        return mutation_ok(body)
    return JsonServer(answer)


def test_a_failed_row_edited_by_the_user_is_resent_under_the_same_key(tmp_path):
    """A row whose attempt failed, then edited without changing what it changes, is sent again
    under the very key of the failed attempt (the API applies it at most once)."""
    sheet = tmp_path / "s.csv"
    with _failing_then_ok(1, 500) as srv:
        first = run_apply(srv.url, write_csv(sheet, [id_row(1, "2026-03-02")]), tmp_path,
                          max_attempts=1)
        assert statuses(first) == ["failed"]
        second = run_apply(srv.url, write_csv(sheet, [id_row(1, "2026-03-20T12:00:00Z")]),
                           tmp_path, max_attempts=1)
        keys = [body["idempotency_key"] for _, body in srv.requests]
    assert statuses(second) == ["applied"]
    assert len(keys) == 2 and keys[0] == keys[1]


def test_a_not_found_row_edited_by_the_user_is_sent_again(tmp_path):
    """A row answered 404 (e.g. a timestamp in the wrong month), then edited, is sent."""
    sheet = tmp_path / "s.csv"
    with _failing_then_ok(1, 404) as srv:
        first = run_apply(srv.url, write_csv(sheet, [id_row(1, "2026-04-02")]), tmp_path)
        assert statuses(first) == ["not_found"]
        second = run_apply(srv.url, write_csv(sheet, [id_row(1, "2026-03-02")]), tmp_path)
        assert srv.mutations == 2
    assert statuses(second) == ["applied"]


def test_retry_unresolved_resends_a_not_found_that_came_from_a_mutation(tmp_path):
    """A mutation answered 404 ends `not_found`; a plain rerun leaves it, a rerun with
    --retry-unresolved sends it again under the same key."""
    sheet = write_csv(tmp_path / "s.csv", [id_row(1, "2026-03-02")])
    with _failing_then_ok(1, 404) as srv:
        assert statuses(run_apply(srv.url, sheet, tmp_path)) == ["not_found"]
        assert statuses(run_apply(srv.url, sheet, tmp_path)) == ["not_found"]
        assert srv.mutations == 1
        again = run_apply(srv.url, sheet, tmp_path, retry_unresolved=True)
        keys = [body["idempotency_key"] for _, body in srv.requests]
    assert statuses(again) == ["applied"]
    assert len(keys) == 2 and keys[0] == keys[1]


def test_a_conflict_row_edited_by_the_user_is_sent_again(tmp_path):
    """A row whose key met a 409, then edited, is sent again and gets the API's own answer,
    never a silent `duplicate`."""
    store_events = [event(1, {"order_id": "ORD-1"}), event(2, {"order_id": "ORD-2"})]
    sheet = tmp_path / "s.csv"
    with crafted_sandbox(store_events) as sb:
        sb.store._initial_keys["fix-1"] = eid(2)
        sb.store.reset()
        first = run_apply(sb.url, write_csv(sheet, [id_row(1, "2026-03-02",
                                                           idempotency_key="fix-1")]), tmp_path)
        assert statuses(first) == ["conflict"]
        second = run_apply(sb.url, write_csv(sheet, [id_row(1, "2026-03-09",
                                                            idempotency_key="fix-1")]), tmp_path)
        assert sb.stats()["requests"]["mutation"] == 2
    assert statuses(second) == ["conflict"]


def test_an_edited_row_after_a_successful_one_is_still_a_duplicate(tmp_path):
    """Only an earlier success makes a row a duplicate: the same change applied before is not
    sent again after an edit that does not change it."""
    sheet = tmp_path / "s.csv"
    with crafted_sandbox([event(1, {"order_id": "ORD-1"})]) as sb:
        assert statuses(run_apply(sb.url, write_csv(sheet, [id_row(1, "2026-03-02")]),
                                  tmp_path)) == ["applied"]
        second = run_apply(sb.url, write_csv(sheet, [id_row(1, "2026-03-09")]), tmp_path)
        assert sb.stats()["requests"]["mutation"] == 1
    assert statuses(second) == ["duplicate"]
    assert second.exit_code == 0
