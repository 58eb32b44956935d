"""Outages are not row failures: an API that cannot be reached, or stops answering, stops
the run with rows left pending, exit 3, and a message that says so."""

from __future__ import annotations

import socket
from pathlib import Path

from conftest import read_report, run_cli, write_csv
from fakeapi import HANG, RESET, FakeApi, order_rows, working

ENV = {"USERMAVEN_TOKEN": "fake-key.fake-token"}
MP_ENV = {"MPARTICLE_API_KEY": "fake-mp-key", "MPARTICLE_API_SECRET": "fake-mp-secret"}


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def apply(url: str, sheet: Path, tmp_path: Path, *extra: str, timeout: float = 120):
    return run_cli(["apply", str(sheet), "--api-url", url, "--checkpoint",
                    str(tmp_path / "cp.sqlite"), "--report", str(tmp_path / "audit.csv"),
                    *extra], env=ENV, timeout=timeout)


def statuses(tmp_path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in read_report(tmp_path / "audit.csv"):
        out[r["status"]] = out.get(r["status"], 0) + 1
    return out


def test_an_unreachable_api_stops_at_once_with_rows_pending_and_exit_3(tmp_path):
    """Connection refused from the start: exit 3, "cannot reach <host>", every row pending,
    a handful of attempts rather than one per row."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(515))
    res = apply(closed_port_url(), sheet, tmp_path)
    assert res.returncode == 3, res.stderr
    assert "cannot reach 127.0.0.1" in res.stderr
    assert "Traceback" not in res.stderr
    assert statuses(tmp_path) == {"pending": 515}
    attempts = sum(int(r["attempts"] or 0) for r in read_report(tmp_path / "audit.csv"))
    assert attempts <= 20


def test_an_unresolvable_host_is_an_outage_not_row_failures(tmp_path):
    """A DNS failure (a name under .invalid never resolves): exit 3, rows pending."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(30))
    res = apply("https://api.corrections-test.invalid", sheet, tmp_path)
    assert res.returncode == 3, res.stderr
    assert "cannot reach api.corrections-test.invalid" in res.stderr
    assert statuses(tmp_path) == {"pending": 30}


def first_then(n: int, broken: str):
    """A working API for the first `n` requests, then `broken` (HANG or RESET) for good."""
    seen = {"n": 0}

    def handler(path: str, body):
        seen["n"] += 1
        return working(path, body) if seen["n"] <= n else broken
    return handler


def test_an_api_that_stops_answering_mid_run_trips_the_breaker(tmp_path):
    """Connections accepted, never answered, after 40 requests: the run ends by itself,
    exit 3, rows not applied stay pending (none failed), and the message says what happened."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(1000))
    with FakeApi(first_then(40, HANG)) as api:
        res = apply(api.url, sheet, tmp_path, "--timeout", "1")
        assert api.count() > 40
    assert res.returncode == 3, res.stderr
    assert "lost contact with 127.0.0.1" in res.stderr
    counts = statuses(tmp_path)
    assert set(counts) <= {"applied", "pending"}
    assert counts["pending"] >= 900


def test_an_api_that_resets_every_connection_mid_run_trips_the_breaker(tmp_path):
    """Connections reset after 30 requests: exit 3, rows pending, not failed."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(400))
    with FakeApi(first_then(30, RESET)) as api:
        res = apply(api.url, sheet, tmp_path, "--concurrency", "1")
        assert api.count() > 30
    assert res.returncode == 3, res.stderr
    assert "lost contact with 127.0.0.1" in res.stderr
    assert set(statuses(tmp_path)) <= {"applied", "pending"}


def test_a_dead_server_ends_a_thousand_row_run_with_the_default_options(tmp_path):
    """A server that never answers, default --timeout and --concurrency: the run ends on its
    own (bounded by the breaker, not by rows × attempts × timeout), exit 3, rows pending."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(1000))
    with FakeApi(lambda _p, _b: HANG) as api:
        res = apply(api.url, sheet, tmp_path, timeout=240)
    assert res.returncode == 3, res.stderr
    assert "cannot reach 127.0.0.1" in res.stderr
    assert statuses(tmp_path) == {"pending": 1000}


def test_an_unreachable_mparticle_stops_with_batches_pending_and_exit_3(tmp_path):
    """mParticle refusing connections: exit 3, "cannot reach", nothing marked failed."""
    rows = [{"event_type": "signup", "lookup_key": "customer_id",
             "lookup_value": f"CUST-{i:04d}", "event_time": "2026-09",
             "identity.customer_id": f"CUST-{i:04d}", "set.plan": "team"} for i in range(300)]
    sheet = write_csv(tmp_path / "s.csv", rows)
    res = run_cli(["apply", str(sheet), "--target", "mparticle", "--mparticle-url",
                   closed_port_url(), "--mparticle-as", "user-attributes", "--checkpoint",
                   str(tmp_path / "cp.sqlite"), "--report", str(tmp_path / "audit.csv")],
                  env=MP_ENV, timeout=120)
    assert res.returncode == 3, res.stderr
    assert "cannot reach 127.0.0.1" in res.stderr
    assert "failed" not in statuses(tmp_path)
