"""Whatever goes wrong inside one row ends that row (or the run) cleanly, never a hang."""

from __future__ import annotations

from conftest import read_report, run_cli, write_csv
from fakeapi import FakeApi, event_id_for, order_rows, working

ENV = {"USERMAVEN_TOKEN": "fake-key.fake-token"}


def odd_timestamps(path: str, body):
    """Lookups answer 200 with a `_timestamp` in a shape the API does not document."""
    if path.startswith("/v1/event-mutation/lookup"):
        value = body["attribute_value"]
        return 200, {"data": [{"event_id": event_id_for(value), "event_type": body["event_type"],
                               "_timestamp": "03/10/2026 10:00:00", "_is_deleted": 0,
                               "event_attributes": {body["attribute_key"]: value}}]}
    return working(path, body)


def test_an_unexpected_lookup_answer_on_a_long_sheet_ends_every_row_without_a_hang(tmp_path):
    """A 250-row sheet whose lookups all answer an unreadable shape: the run ends, no
    traceback, every row reported and retryable."""
    sheet = write_csv(tmp_path / "s.csv", order_rows(250))
    with FakeApi(odd_timestamps) as api:
        res = run_cli(["apply", str(sheet), "--api-url", api.url, "--checkpoint",
                       str(tmp_path / "cp.sqlite"), "--report", str(tmp_path / "audit.csv"),
                       "--max-attempts", "1"], env=ENV, timeout=90)
        assert api.count("/v1/event-mutation/lookup") >= 1
    assert "Traceback" not in res.stderr
    assert res.returncode in (1, 3), res.stderr
    lines = read_report(tmp_path / "audit.csv")
    assert len(lines) == 250
    assert {r["status"] for r in lines} <= {"failed", "pending"}
    assert api.count("/v1/event-mutation") == api.count("/v1/event-mutation/lookup")


def test_a_row_whose_answer_breaks_the_pipeline_fails_alone_and_the_rest_are_applied(tmp_path):
    """One order's lookup answers an unreadable event: that row is failed with the error,
    every other row of a 220-row sheet is applied."""
    def one_odd(path: str, body):
        if path.startswith("/v1/event-mutation/lookup") and body["attribute_value"] == "ORD-00007":
            return odd_timestamps(path, body)
        return working(path, body)

    sheet = write_csv(tmp_path / "s.csv", order_rows(220))
    with FakeApi(one_odd) as api:
        res = run_cli(["apply", str(sheet), "--api-url", api.url, "--checkpoint",
                       str(tmp_path / "cp.sqlite"), "--report", str(tmp_path / "audit.csv"),
                       "--max-attempts", "1"], env=ENV, timeout=90)
    assert "Traceback" not in res.stderr
    assert res.returncode == 1, res.stderr
    lines = {r["lookup_value"]: r for r in read_report(tmp_path / "audit.csv")}
    assert len(lines) == 220
    odd = lines.pop("ORD-00007")
    assert odd["status"] == "failed" and odd["error"]
    assert {r["status"] for r in lines.values()} == {"applied"}
