"""mParticle: a user's corrections land in sheet order, and only proven acceptance counts.

The server is a stdlib HTTP server on loopback (tests/hostile.py) speaking for mParticle; runs
go through the library (`apply_sheet`), as the command line does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import read_report, run_cli, write_csv
from hostile import MP_KEY, MP_SECRET, Exchange, hostile_server

from pipeline.jobs import ApplyOutcome, SheetJob, apply_sheet
from pipeline.model import SheetDefaults
from pipeline.run_types import RunOptions
from pipeline.targets.mparticle import deliver as deliver_module
from pipeline.targets.mparticle.client import MParticleTarget
from pipeline.targets.mparticle.deliver import MParticleSetup
from pipeline.targets.mparticle.limits import BULK_PATH, HISTORICAL_PATH
from pipeline.targets.mparticle.mapping import MParticleOptions

FAST = {"backoff_base": 0.001, "backoff_max": 0.01}
EVENT = "00000000-0000-4000-8000-000000000001"


def run(url: str, sheet: Path, tmp_path: Path, *, batch_size: int = 5000,
        mode: str = "event", **options: Any) -> ApplyOutcome:
    setup = MParticleSetup(MParticleTarget(url, MP_KEY, MP_SECRET, url),
                           MParticleOptions(mode=mode))
    return apply_sheet(SheetJob(sheet, SheetDefaults(), batch_size=batch_size), None,
                       RunOptions(**{**FAST, **options}), checkpoint=tmp_path / "cp.sqlite",
                       report=tmp_path / "audit.csv", install_signals=False, mparticle=setup)


def lines(out: ApplyOutcome) -> list[dict[str, str]]:
    return [r for r in read_report(Path(out.report)) if r["target"] == "mparticle"]


def batches_of(ex: Exchange) -> list[dict[str, Any]]:
    return json.loads(ex.body)


# -- a user's order --------------------------------------------------------------------------


def test_a_users_later_correction_waits_for_the_earlier_one_to_be_accepted(tmp_path):
    """First request fails: the user's later one is held back (pending), never sent before it;
    the next run sends both in order, so the later value is the last one mParticle keeps."""
    when = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    sheet = write_csv(tmp_path / "s.csv", [
        {"event_id": f"00000000-0000-4000-8000-00000000000{i}", "timestamp": when,
         "identity.customer_id": user, "set.plan": plan}
        for i, (user, plan) in enumerate([("C-1", "A"), ("C-1", "B"), ("C-2", "Z")])])
    failing = [True]
    kept: list[str] = []

    def respond(ex: Exchange) -> None:
        values = [b["user_attributes"]["plan"] for b in batches_of(ex)]
        if failing[0] and "A" in values:
            ex.reply(500, "")
            return
        kept.extend(values)
        ex.reply(202, "")

    with hostile_server(respond) as srv:
        first = run(srv.url, sheet, tmp_path, batch_size=1, mode="user-attributes",
                    max_attempts=2, concurrency=4)
        by_row = {r["row_number"]: r for r in lines(first)}
        assert by_row["2"]["status"] == "failed"
        assert by_row["3"]["status"] == "pending", by_row["3"]
        assert "earlier" in by_row["3"]["error"]
        assert by_row["4"]["status"] == "accepted"  # another user is not held back
        assert "B" not in kept
        failing[0] = False
        second = run(srv.url, sheet, tmp_path, batch_size=1, mode="user-attributes",
                     max_attempts=2, concurrency=4)
    assert [r["status"] for r in lines(second)] == ["accepted"] * 3
    assert [v for v in kept if v in "AB"] == ["A", "B"]


# -- 202 with errors -------------------------------------------------------------------------


def test_a_202_whose_errors_name_no_batch_is_narrowed_down_until_they_do(tmp_path):
    """Errors that name no source_request_id: the request is resent in halves (same bytes);
    the batch whose lone request still carries errors is `rejected`, the others `accepted`."""
    sheet = write_csv(tmp_path / "s.csv", [
        {"event_id": f"00000000-0000-4000-8000-00000000000{i}",
         "timestamp": (datetime.now(UTC) - timedelta(days=2)).isoformat(),
         "identity.customer_id": f"C-{i}", "set.price": str(i)} for i in range(4)])

    def respond(ex: Exchange) -> None:
        users = [b["user_identities"]["customer_id"] for b in batches_of(ex)]
        if "C-2" in users:
            ex.reply(202, {"errors": [{"code": "BAD_REQUEST", "message": "price is odd"}]})
        else:
            ex.reply(202, "")

    with hostile_server(respond) as srv:
        out = run(srv.url, sheet, tmp_path, concurrency=1)
    by_row = {r["row_number"]: r for r in lines(out)}
    assert {n: r["status"] for n, r in by_row.items()} == {
        "2": "accepted", "3": "accepted", "4": "rejected", "5": "accepted"}
    assert "price is odd" in by_row["4"]["error"]
    sent = [b["source_request_id"] for ex in srv.seen for b in batches_of(ex)]
    assert len(sent) > 4  # resent: the first answer proved nothing about any one batch


def test_a_lone_batch_answered_202_with_errors_is_rejected_not_accepted(tmp_path):
    """One batch, a 202 carrying errors that do not name it: those errors are about it."""
    sheet = write_csv(tmp_path / "s.csv", [
        {"event_id": EVENT, "timestamp": (datetime.now(UTC) - timedelta(days=2)).isoformat(),
         "identity.customer_id": "C-1", "set.price": "1"}])
    with hostile_server(lambda ex: ex.reply(
            202, {"errors": [{"code": "BAD_REQUEST", "message": "no"}]})) as srv:
        out = run(srv.url, sheet, tmp_path)
    line = lines(out)[0]
    assert line["status"] == "rejected" and "no" in line["error"]


# -- the endpoint at send time ---------------------------------------------------------------


def test_the_historical_endpoint_is_chosen_when_the_batch_is_sent(tmp_path, monkeypatch):
    """Planned when its event was 29 days old, sent 2 days later: it goes to /historical."""
    planned_at = datetime.now(UTC)
    sheet = write_csv(tmp_path / "s.csv", [
        {"event_id": EVENT, "timestamp": (planned_at - timedelta(days=29)).isoformat(),
         "identity.customer_id": "C-1", "set.price": "1"}])
    status = [500]
    with hostile_server(lambda ex: ex.reply(status[0], "")) as srv:
        first = run(srv.url, sheet, tmp_path, max_attempts=1)
        assert lines(first)[0]["status"] == "failed"
        status[0] = 202
        monkeypatch.setattr(deliver_module, "utcnow", lambda: planned_at + timedelta(days=2))
        second = run(srv.url, sheet, tmp_path, max_attempts=1)
    assert [ex.path for ex in srv.seen] == ["/v2" + BULK_PATH.removeprefix("/v2"),
                                            "/v2" + HISTORICAL_PATH.removeprefix("/v2")]
    line = lines(second)[0]
    assert line["status"] == "accepted" and line["endpoint"] == HISTORICAL_PATH
    assert len({ex.body for ex in srv.seen}) == 1


# -- A → B → A -------------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["event_id", "lookup"])
def test_a_change_undone_and_redone_is_sent_each_time_to_mparticle_alone(tmp_path, by):
    """A → B → A on one event, mParticle alone: three corrections sent, none a duplicate."""
    when = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0)
    if by == "event_id":
        who = [{"event_id": EVENT, "timestamp": (when + timedelta(seconds=s)).isoformat()}
               for s in (0, 0, 1)]
    else:
        who = [{"event_type": "order_completed", "lookup_key": "order_id",
                "lookup_value": "ORD-1", "event_time": (when + timedelta(seconds=s)).isoformat()}
               for s in (0, 0, 1)]
    rows = [{**w, "identity.customer_id": "C-1", "set.price": p}
            for w, p in zip(who, ["5.00", "6.00", "5.00"], strict=True)]
    with hostile_server(lambda ex: ex.reply(202, "")) as srv:
        out = run(srv.url, write_csv(tmp_path / "s.csv", rows), tmp_path)
    got = lines(out)
    assert [r["status"] for r in got] == ["accepted"] * 3, got
    assert len({r["source_message_id"] for r in got}) == 3
    sent = [e["data"]["custom_attributes"]["price"] for ex in srv.seen
            for b in batches_of(ex) for e in b["events"]]
    assert sent == ["5.00", "6.00", "5.00"]


FLIPS = ["5.00", "6.00", "5.00", "6.00", "5.00"]


@pytest.mark.parametrize("by", ["event_id", "lookup"])
def test_a_change_flipped_back_and_forth_is_sent_every_time_to_mparticle_alone(tmp_path, by):
    """A → B → A → B → A on one event, mParticle alone: five corrections sent, none a
    duplicate, and the last one mParticle receives is the sheet's last."""
    when = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0)
    if by == "event_id":
        who = [{"event_id": EVENT, "timestamp": (when + timedelta(seconds=s)).isoformat()}
               for s in (0, 0, 1, 1, 2)]
    else:
        who = [{"event_type": "order_completed", "lookup_key": "order_id",
                "lookup_value": "ORD-1", "event_time": (when + timedelta(seconds=s)).isoformat()}
               for s in (0, 0, 1, 1, 2)]
    rows = [{**w, "identity.customer_id": "C-1", "set.price": p}
            for w, p in zip(who, FLIPS, strict=True)]
    with hostile_server(lambda ex: ex.reply(202, "")) as srv:
        out = run(srv.url, write_csv(tmp_path / "s.csv", rows), tmp_path)
    got = lines(out)
    assert [r["status"] for r in got] == ["accepted"] * 5, got
    assert len({r["source_message_id"] for r in got}) == 5
    sent = [e["data"]["custom_attributes"]["price"] for ex in srv.seen
            for b in batches_of(ex) for e in b["events"]]
    assert sent == FLIPS


def test_rows_appended_to_a_flipping_sheet_after_a_run_are_sent_not_taken_for_duplicates(
        tmp_path):
    """A → B → A delivered, then the sheet gains B and A: the next run sends both (the event
    is at A, so B is a change, and the last A a redo), each under a message id of its own."""
    when = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0)
    rows = [{"event_id": EVENT, "timestamp": (when + timedelta(seconds=s)).isoformat(),
             "identity.customer_id": "C-1", "set.price": p}
            for s, p in zip((0, 0, 1, 1, 2), FLIPS, strict=True)]
    with hostile_server(lambda ex: ex.reply(202, "")) as srv:
        run(srv.url, write_csv(tmp_path / "s.csv", rows[:3]), tmp_path)
        seen = len(srv.seen)
        out = run(srv.url, write_csv(tmp_path / "s.csv", rows), tmp_path)
        later = [e["data"]["custom_attributes"]["price"] for ex in srv.seen[seen:]
                 for b in batches_of(ex) for e in b["events"]]
    got = lines(out)
    assert [r["status"] for r in got] == ["accepted"] * 5, got
    assert len({r["source_message_id"] for r in got}) == 5
    assert later == ["6.00", "5.00"]


# -- limits that belong to Usermaven ---------------------------------------------------------


def big_row() -> dict[str, str]:
    """Attributes of ~12 KB as sent: over Usermaven's 10 KB, within mParticle's limits."""
    return {"event_id": EVENT, "timestamp": (datetime.now(UTC) - timedelta(days=2)).isoformat(),
            "identity.customer_id": "C-1",
            **{f"set.note{i}": str(i) * 4000 for i in range(3)}}


def test_usermavens_10_kb_limit_applies_only_when_usermaven_is_a_target(tmp_path):
    """12 KB of attributes: invalid with Usermaven targeted; validated and accepted for
    mParticle alone."""
    sheet = write_csv(tmp_path / "s.csv", [big_row()])
    both = run_cli(["validate", str(sheet), "--target", "usermaven", "--target", "mparticle"])
    assert both.returncode == 2 and "10 KB" in both.stdout + both.stderr, both.stdout
    alone = run_cli(["validate", str(sheet), "--target", "mparticle"])
    assert alone.returncode == 0, alone.stdout + alone.stderr
    with hostile_server(lambda ex: ex.reply(202, "")) as srv:
        out = run(srv.url, sheet, tmp_path)
    assert [r["status"] for r in lines(out)] == ["accepted"]
    sent = batches_of(srv.seen[0])[0]["events"][0]["data"]["custom_attributes"]
    assert sent["note2"] == "2" * 4000
