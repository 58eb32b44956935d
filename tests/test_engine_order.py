"""One delivery engine for every target: within a chain (an event, a user) sends go in the
order they were handed in, a later one waits for the earlier one's settled answer, and one
handed in after a send that did not settle is held back for the next run, not sent."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import read_report, run_cli, write_csv
from fakeapi import FakeApi, working

from pipeline.engine import Engine
from pipeline.retry import RetryPolicy

ENV = {"USERMAVEN_TOKEN": "fake-key.fake-token"}


def engine() -> Engine:
    return Engine(concurrency=4, rate=None, max_wait=5.0, policy=RetryPolicy(1, 0.0, 0.0),
                  shutdown_grace=1.0, host="test")


def test_sends_of_one_chain_go_in_order_and_other_chains_do_not_wait():
    """A slow first send of chain A delays A's second send, never B's."""
    order: list[str] = []

    async def main() -> None:
        e = engine()

        def send(name: str, seconds: float):
            async def go(held: frozenset[str]) -> tuple[str, ...]:
                await asyncio.sleep(seconds)
                order.append(name)
                return ()
            return go

        e.start({"A"}, send("A1", 0.2))
        e.start({"A"}, send("A2", 0.0))
        e.start({"B"}, send("B1", 0.0))
        await e._drain()

    asyncio.run(main())
    assert order.index("A1") < order.index("A2")
    assert order.index("B1") < order.index("A1")


def test_a_send_after_one_that_did_not_settle_is_told_it_is_held_back():
    """The earlier send on chain A returned A as unsettled: the later one on A is told so; a
    send on A and B is held for A only; a send on B alone is not held."""
    told: dict[str, frozenset[str]] = {}

    async def main() -> None:
        e = engine()

        def send(name: str, unsettled: tuple[str, ...] = ()):
            async def go(held: frozenset[str]) -> tuple[str, ...]:
                told[name] = held
                return unsettled
            return go

        e.start({"A"}, send("first", ("A",)))
        e.start({"A"}, send("second"))
        e.start({"A", "B"}, send("both"))
        e.start({"B"}, send("b only"))
        await e._drain()

    asyncio.run(main())
    assert told == {"first": frozenset(), "second": frozenset({"A"}),
                    "both": frozenset({"A"}), "b only": frozenset()}


def test_a_later_correction_of_an_event_is_held_back_when_the_earlier_one_failed(tmp_path):
    """Two rows change one event; the first one's mutation fails (5xx after every retry):
    the second is not sent (sent, it would be overwritten by the first one's resend next
    run), it stays pending saying why, and the next run applies both, in sheet order."""
    rows = [{"event_type": "order_completed", "lookup_key": "order_id",
             "lookup_value": "ORD-1", "event_time": "2026-09", "set.price": price}
            for price in ("1.50", "2.50")]
    sheet = write_csv(tmp_path / "s.csv", rows)
    failing = {"on": True}

    def handler(path: str, body):
        if (failing["on"] and path == "/v1/event-mutation"
                and body["event_attributes"].get("price") == "1.50"):
            return 500, {"error": "internal"}
        return working(path, body)

    def apply(url: str):
        return run_cli(["apply", str(sheet), "--api-url", url, "--checkpoint",
                        str(tmp_path / "cp.sqlite"), "--report", str(tmp_path / "audit.csv"),
                        "--max-attempts", "2", "--backoff-base", "0.01"], env=ENV,
                       timeout=120)

    with FakeApi(handler) as api:
        first = apply(api.url)
        assert first.returncode == 1, first.stderr
        sent = [r.body["event_attributes"]["price"] for r in api.received
                if r.path == "/v1/event-mutation"]
        assert sent == ["1.50", "1.50"]
        first_row, second_row = sorted(read_report(tmp_path / "audit.csv"),
                                       key=lambda r: int(r["row_number"]))
        assert first_row["status"] == "failed"
        assert second_row["status"] == "pending"
        assert "held back" in second_row["error"]
        failing["on"] = False
        mark = len(api.received)
        second = apply(api.url)
        assert second.returncode == 0, second.stderr
        resent = [r.body["event_attributes"]["price"] for r in api.received[mark:]
                  if r.path == "/v1/event-mutation"]
    assert resent == ["1.50", "2.50"]
    assert {r["status"] for r in read_report(tmp_path / "audit.csv")} == {"applied"}


def test_rows_of_other_events_are_sent_when_one_event_fails(tmp_path: Path):
    """Holding back is per event: a failure on one event does not hold another's rows."""
    rows = [{"event_type": "order_completed", "lookup_key": "order_id",
             "lookup_value": value, "event_time": "2026-09", "set.price": "3.00"}
            for value in ("ORD-1", "ORD-2")]
    sheet = write_csv(tmp_path / "s.csv", rows)

    def handler(path: str, body):
        if path == "/v1/event-mutation/lookup" or body.get("event_id") is None:
            return working(path, body)
        if body["event_id"] == working("/v1/event-mutation/lookup", {
                "attribute_value": "ORD-1", "event_type": "x",
                "attribute_key": "order_id"})[1]["data"][0]["event_id"]:
            return 500, {"error": "internal"}
        return working(path, body)

    with FakeApi(handler) as api:
        res = run_cli(["apply", str(sheet), "--api-url", api.url, "--checkpoint",
                       str(tmp_path / "cp.sqlite"), "--report", str(tmp_path / "audit.csv"),
                       "--max-attempts", "1"], env=ENV, timeout=120)
    assert res.returncode == 1, res.stderr
    report = {r["lookup_value"]: r["status"] for r in read_report(tmp_path / "audit.csv")}
    assert report == {"ORD-1": "failed", "ORD-2": "applied"}
