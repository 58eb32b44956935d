"""Stop means stop: after a signal or a fatal answer, no new request leaves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, read_report, run_cli, write_csv
from fakeapi import FakeApi, always, order_rows, slow, working

ENV = {"USERMAVEN_TOKEN": "fake-key.fake-token"}


def apply_args(api: FakeApi, sheet: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["apply", str(sheet), "--api-url", api.url, "--checkpoint",
            str(tmp_path / "cp.sqlite"), "--report", str(tmp_path / "audit.csv"), *extra]


def start(args: list[str]) -> subprocess.Popen[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("USERMAVEN_")}, **ENV}
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.mark.parametrize("status", [401, 403])
def test_after_a_refused_token_no_request_leaves_beyond_those_on_the_wire(tmp_path, status):
    """A 401/403 stops the run: at most --concurrency requests ever reach the API, exit 3."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(300))
    with FakeApi(always(status, {"error": "bad token"}, seconds=0.05)) as api:
        res = run_cli(apply_args(api, sheet, tmp_path, "--concurrency", "4"), env=ENV)
        assert res.returncode == 3, res.stderr
        assert api.count() <= 4
    assert "Traceback" not in res.stderr
    statuses = {r["status"] for r in read_report(tmp_path / "audit.csv")}
    assert statuses == {"pending"}


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_after_a_signal_no_new_request_leaves(tmp_path, sig, code):
    """After SIGINT/SIGTERM, requests arriving at the API number at most --concurrency."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(200))
    with FakeApi(slow(working, 0.1)) as api:
        proc = start(apply_args(api, sheet, tmp_path, "--concurrency", "2"))
        try:
            wait_for(lambda: api.count("/v1/event-mutation") >= 20)
            proc.send_signal(sig)
            signalled = time.monotonic()
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == code, err
        assert api.count(after=signalled) <= 2
    assert "Traceback" not in err
    lines = read_report(tmp_path / "audit.csv")
    assert len(lines) == 200
    assert "pending" in {r["status"] for r in lines}


def test_a_retry_waiting_for_its_turn_does_not_leave_after_a_signal(tmp_path):
    """Rows retrying server errors stop retrying at a signal: nothing new reaches the API."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(40))
    with FakeApi(always(500, {"error": "down"}, seconds=0.02)) as api:
        proc = start(apply_args(api, sheet, tmp_path, "--concurrency", "3",
                                "--backoff-base", "0.3", "--max-attempts", "50"))
        try:
            wait_for(lambda: api.count() >= 15)
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == 143, err
        assert api.count(after=signalled) <= 3
    assert {r["status"] for r in read_report(tmp_path / "audit.csv")} == {"pending"}


def test_a_fatal_answer_to_a_mutation_stops_lookups_and_mutations_queued_behind_it(tmp_path):
    """A 401 to the first mutation: nothing else leaves but what was already on the wire."""
    sent = {"mutations": 0}

    def handler(path: str, body):
        if path == "/v1/event-mutation":
            sent["mutations"] += 1
            return 401, {"error": "token revoked"}
        return working(path, body)

    sheet = write_csv(tmp_path / "s.csv", order_rows(300))
    with FakeApi(slow(handler, 0.02)) as api:
        res = run_cli(apply_args(api, sheet, tmp_path, "--concurrency", "4"), env=ENV)
        assert res.returncode == 3, res.stderr
        first_refusal = min(r.at for r in api.received if r.path == "/v1/event-mutation")
        # the first refused mutation was answered 20 ms after it arrived; anything that
        # arrives later than that was sent after the stop, except what was on the wire
        assert api.count(after=first_refusal + 0.02) <= 4


MP_ENV = {"MPARTICLE_API_KEY": "fake-mp-key", "MPARTICLE_API_SECRET": "fake-mp-secret"}


def user_rows(n: int) -> list[dict[str, str]]:
    return [{"event_type": "signup", "lookup_key": "customer_id",
             "lookup_value": f"CUST-{i:05d}", "event_time": "2026-09",
             "identity.customer_id": f"CUST-{i:05d}", "set.plan": "team"} for i in range(n)]


def test_after_mparticle_refuses_the_key_no_further_batch_leaves(tmp_path):
    """mParticle answering 401: at most --concurrency requests reach it, exit 3."""
    sheet = write_csv(tmp_path / "s.csv", user_rows(1500))
    with FakeApi(always(401, {"errors": [{"message": "bad key"}]}, seconds=0.05)) as mp:
        res = run_cli(["apply", str(sheet), "--target", "mparticle", "--mparticle-url", mp.url,
                       "--mparticle-as", "user-attributes", "--concurrency", "2",
                       "--checkpoint", str(tmp_path / "cp.sqlite"),
                       "--report", str(tmp_path / "audit.csv")], env=MP_ENV)
        assert res.returncode == 3, res.stderr
        assert 1 <= mp.count() <= 2
    assert "Traceback" not in res.stderr
