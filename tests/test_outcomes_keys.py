"""Keys and decisions across runs: edited rows, explicit keys in any order, key namespaces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import read_report, run_cli, write_csv
from crafted import (
    JsonServer,
    crafted_sandbox,
    eid,
    event,
    mutation_ok,
    order_row,
    run_apply,
)

from pipeline.sandbox.server import SANDBOX_TOKEN


def id_row(n: int, timestamp: str, price: str = "7.00", **extra: str) -> dict[str, str]:
    return {"event_id": eid(n), "timestamp": timestamp, "set.final_price": price, **extra}


def statuses(out: Any) -> list[str]:
    """Statuses of the sheet's rows (lines kept for mutations of rows no longer in the sheet,
    which have no row number, are left out)."""
    return [r["status"] for r in read_report(out.report) if r["row_number"]]


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


def test_a_change_redone_in_a_later_sheet_after_another_change_is_applied_again(tmp_path):
    """Sheet 1 sets A, sheet 2 sets B, sheet 3 sets A again (each applied, one checkpoint):
    the event no longer holds A, so the third is a redo under a key of its own, not a
    duplicate of the first; the event ends at A, and rerunning sheet 3 sends nothing."""
    sheet = tmp_path / "s.csv"
    sheets = [[order_row("ORD-1", "5.00")], [order_row("ORD-1", "6.00")],
              [order_row("ORD-1", "5.00", **{"expect.final_price": "6.00"})]]
    seen: list[tuple[list[str], str]] = []
    with crafted_sandbox([event(1, {"order_id": "ORD-1"})]) as sb:
        for rows in [*sheets, sheets[-1]]:
            out = run_apply(sb.url, write_csv(sheet, rows), tmp_path)
            lines = [r for r in read_report(out.report) if r["row_number"]]
            seen.append(([r["status"] for r in lines], lines[0]["idempotency_key"]))
        assert sb.stats()["requests"]["mutation"] == 3
        assert sb.stats()["double_applied"] == []
        assert sb.store.get(eid(1)).attributes["final_price"] == "5.00"
    assert [s for s, _ in seen] == [["applied"]] * 4
    assert len({k for _, k in seen[:3]}) == 3


# -- explicit keys do not depend on row order ------------------------------------------------


def _keys_per_event(tmp_path: Path, rows: list[dict[str, str]], name: str) -> dict[str, str]:
    events = [event(i, {"order_id": f"ORD-{i}"}) for i in range(1, 5)]
    with crafted_sandbox(events) as sb:
        out = run_apply(sb.url, write_csv(tmp_path / f"{name}.csv", rows), tmp_path / name)
        assert sb.stats()["conflicts"] == 0
        assert sb.stats()["double_applied"] == []
    lines = read_report(out.report)
    assert {r["status"] for r in lines} == {"applied"}, lines
    return {f"{r['event_id']}|{r['attributes_after']}": r["idempotency_key"] for r in lines}


def test_explicit_keys_are_the_same_whatever_the_row_order(tmp_path):
    """A key shared by several events (and by two changes of one event) gets the same key per
    (event, change) in every row order, on fresh checkpoints and sandboxes, and never a 409;
    a key the sheet uses once stays bare."""
    rows = [order_row("ORD-1", "1.00", idempotency_key="fix-shared"),
            order_row("ORD-2", "2.00", idempotency_key="fix-shared"),
            order_row("ORD-3", "3.00", idempotency_key="fix-alone"),
            order_row("ORD-4", "4.00", idempotency_key="fix-twice"),
            order_row("ORD-4", "5.00", idempotency_key="fix-twice")]
    orders = [[0, 1, 2, 3, 4], [1, 0, 2, 4, 3], [2, 4, 1, 3, 0]]
    seen = [_keys_per_event(tmp_path, [rows[i] for i in order], f"o{n}")
            for n, order in enumerate(orders)]
    assert seen[0] == seen[1] == seen[2]
    keys = list(seen[0].values())
    assert "fix-alone" in keys
    assert len(set(keys)) == 5
    assert all(k.startswith(("fix-shared-", "fix-twice-")) for k in keys if k != "fix-alone")


def test_an_explicit_key_used_once_for_one_event_is_sent_bare(tmp_path):
    """The sheet's key reaches the API as written when one row uses it for one event."""
    keys = _keys_per_event(tmp_path, [order_row("ORD-1", "1.00", idempotency_key="my-key-1")],
                           "one")
    assert list(keys.values()) == ["my-key-1"]


# -- key namespaces --------------------------------------------------------------------------


def _cli_apply(url: str, sheet: Path, cp: Path, *extra: str) -> Any:
    return run_cli(["apply", str(sheet), "--api-url", url, "--checkpoint", str(cp),
                    "--report", str(cp.with_suffix(".csv")), *extra],
                   env={"USERMAVEN_TOKEN": SANDBOX_TOKEN}, timeout=60)


def test_another_key_namespace_on_an_existing_checkpoint_is_refused(tmp_path):
    """--key-namespace other than the checkpoint's exits 2, says why and what to do, and sends
    nothing; the checkpoint's own namespace resumes."""
    sheet = write_csv(tmp_path / "s.csv", [order_row("ORD-1", "1.00"), order_row("ORD-2")])
    cp = tmp_path / "cp.sqlite"
    with crafted_sandbox([event(1, {"order_id": "ORD-1"})]) as sb:
        first = _cli_apply(sb.url, sheet, cp, "--key-namespace", "first")
        assert first.returncode == 1, first.stderr
        before = sb.stats()["requests"]
        refused = _cli_apply(sb.url, sheet, cp, "--key-namespace", "second")
        default = _cli_apply(sb.url, sheet, cp)
        assert sb.stats()["requests"] == before
        again = _cli_apply(sb.url, sheet, cp, "--key-namespace", "first")
    for proc in (refused, default):
        assert proc.returncode == 2
        assert "key namespace" in proc.stderr and "new --checkpoint" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert again.returncode == 1, again.stderr


def test_a_checkpoint_from_before_namespaces_were_recorded_counts_as_the_default(tmp_path):
    """An older checkpoint without a recorded namespace is the default namespace: resuming
    without --key-namespace works, another namespace is refused."""
    import sqlite3

    sheet = write_csv(tmp_path / "s.csv", [order_row("ORD-1", "1.00")])
    cp = tmp_path / "cp.sqlite"
    with crafted_sandbox([event(1, {"order_id": "ORD-1"})]) as sb:
        assert _cli_apply(sb.url, sheet, cp).returncode == 0
        db = sqlite3.connect(cp)
        db.execute("DELETE FROM meta WHERE key = 'key_namespace'")
        db.commit()
        db.close()
        refused = _cli_apply(sb.url, sheet, cp, "--key-namespace", "new")
        resumed = _cli_apply(sb.url, sheet, cp)
    assert refused.returncode == 2 and "key namespace" in refused.stderr
    assert resumed.returncode == 0, resumed.stderr


def test_a_failed_change_copied_into_a_row_sharing_its_key_is_resent_under_the_same_key(
        tmp_path):
    """A row that failed under its bare explicit key, then copied (edited) beside the original
    so the sheet now shares the key, still sends that change under the one key it was first
    sent with: never a second key for the same change."""
    sheet = tmp_path / "s.csv"
    with _failing_then_ok(1, 500) as srv:
        run_apply(srv.url, write_csv(sheet, [id_row(1, "2026-03-02", idempotency_key="k-1")]),
                  tmp_path, max_attempts=1)
        again = run_apply(srv.url, write_csv(sheet, [
            id_row(1, "2026-03-02", idempotency_key="k-1"),
            id_row(1, "2026-03-05", idempotency_key="k-1")]), tmp_path, max_attempts=1)
        keys = {body["idempotency_key"] for _, body in srv.requests}
    assert keys == {"k-1"}
    assert sorted(statuses(again)) == ["applied", "duplicate"]
