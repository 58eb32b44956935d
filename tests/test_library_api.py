"""The library API: the jobs from a script or a notebook, results as data (DataFrames)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_csv

import pipeline
from pipeline import Corrections, CorrectionsError, RunOptions, Sheet
from pipeline.sandbox.server import SANDBOX_TOKEN

ORDERS = {"event_type": "order_completed", "match": "order_id", "start": "2026-09",
          "end": "2026-09"}
EID_1002 = "407dfe54-d8e9-4aa1-9744-d89e5f6107b0"


def sheet(tmp_path: Path) -> Sheet:
    path = write_csv(tmp_path / "fixes.csv", [
        {"order_id": "ORD-1002", "set.final_price": "11.00"},
        {"order_id": "ORD-0000", "set.final_price": "12.00"}])
    return Sheet(path, **ORDERS)


def client(sandbox) -> Corrections:
    return Corrections(sandbox.url, SANDBOX_TOKEN,
                       options=RunOptions(backoff_base=0.001, backoff_max=0.01))


def test_apply_from_a_running_event_loop_returns_counts_exit_code_and_a_dataframe(
        sandbox, tmp_path):
    """A notebook's situation: the sync `apply` called while a loop runs still works."""
    async def notebook_cell():
        asyncio.get_running_loop()  # a loop is running here, as in Jupyter
        return client(sandbox).apply(sheet(tmp_path), checkpoint=tmp_path / "cp.sqlite")

    result = asyncio.run(notebook_cell())
    assert result.counts == {"applied": 1, "not_found": 1}
    assert result.exit_code == 1 and not result.ok
    frame = result.report()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["status"]) == ["applied", "not_found"]
    assert frame.loc[0, "event_id"] == EID_1002 and frame.loc[0, "mutation_id"]
    assert (tmp_path / "cp.audit.csv").exists()  # the report beside the checkpoint
    assert sandbox.store.get(EID_1002).attributes["final_price"] == "11.00"


def test_the_async_variant_leaves_the_callers_loop_running(sandbox, tmp_path):
    """`await apply_async(...)` runs the job off the loop: the caller's other tasks go on."""
    sandbox.set_faults(latency_ms=100)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def main():
        task = asyncio.create_task(ticker())
        try:
            return await client(sandbox).apply_async(sheet(tmp_path),
                                                     checkpoint=tmp_path / "cp.sqlite")
        finally:
            task.cancel()

    result = asyncio.run(main())
    assert result.counts == {"applied": 1, "not_found": 1}
    assert ticks > 0
    assert list(result.report()["status"]) == ["applied", "not_found"]


def test_module_level_apply_takes_the_token_from_the_environment(sandbox, tmp_path,
                                                                  monkeypatch):
    """`pipeline.apply(sheet, api_url=...)` with USERMAVEN_TOKEN set, and its async twin."""
    monkeypatch.setenv("USERMAVEN_TOKEN", SANDBOX_TOKEN)
    first = pipeline.apply(sheet(tmp_path), api_url=sandbox.url,
                           checkpoint=tmp_path / "cp.sqlite")
    assert first.counts == {"applied": 1, "not_found": 1}
    again = asyncio.run(pipeline.apply_async(sheet(tmp_path), api_url=sandbox.url,
                                             checkpoint=tmp_path / "cp.sqlite"))
    assert again.counts == first.counts and again.run_id != first.run_id
    assert list(sandbox.stats()["applications"].values()) == [1]  # the rerun applied nothing


def test_the_library_installs_no_signal_handlers_and_prints_nothing(sandbox, tmp_path, capfd):
    """No SIGINT/SIGTERM handler is replaced, nothing reaches stdout or stderr."""
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    result = client(sandbox).apply(sheet(tmp_path), checkpoint=tmp_path / "cp.sqlite")
    assert result.exit_code == 1
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_plan_returns_the_plan_as_a_dataframe_and_changes_nothing(sandbox, tmp_path):
    """`plan` looks up and reports `planned` with before → after; the event is untouched."""
    result = client(sandbox).plan(sheet(tmp_path), report=tmp_path / "p.csv")
    assert result.counts == {"planned": 1, "not_found": 1}
    frame = result.report()
    row = frame[frame["status"] == "planned"].iloc[0]
    assert json.loads(row["attributes_after"]) == {"final_price": "11.00"}
    assert sandbox.store.get(EID_1002).attributes["final_price"] == "49.50"
    assert (tmp_path / "p.csv").exists()


def test_validate_returns_problems_as_data_without_a_token(tmp_path):
    """Offline: row-numbered problems in a DataFrame and exit code 2; no token needed."""
    path = write_csv(tmp_path / "s.csv", [
        {"event_id": "not-a-uuid", "timestamp": "2026-09-01", "set.x": "1"},
        {"event_id": EID_1002, "timestamp": "2026-09-05", "set.x": "1"}])
    result = Corrections(token="").validate(path)
    assert (result.rows, result.valid, result.exit_code) == (2, 1, 2)
    frame = result.report()
    assert list(frame["row_number"]) == [2] and list(frame["column"]) == ["event_id"]


def test_a_sheet_error_raises_with_the_commands_exit_code(sandbox, tmp_path):
    """A broken sheet raises CorrectionsError (exit_code 2) instead of exiting the process."""
    path = write_csv(tmp_path / "s.csv", [{"order_id": "ORD-1", "set.x": "1", "lookup_vale": "x"}])
    with pytest.raises(CorrectionsError) as caught:
        client(sandbox).apply(Sheet(path, **ORDERS), checkpoint=tmp_path / "cp.sqlite")
    assert caught.value.exit_code == 2 and "lookup_value" in str(caught.value)


def test_verify_and_report_read_a_checkpoint_back(sandbox, tmp_path):
    """After apply: `verify` confirms the change is visible; `report` returns and writes it."""
    c = client(sandbox)
    c.apply(sheet(tmp_path), checkpoint=tmp_path / "cp.sqlite")
    checked = c.verify(tmp_path / "cp.sqlite", wait=5)
    assert checked.verified == 1 and checked.mismatch == 0 and checked.exit_code == 0
    frame = pipeline.report(tmp_path / "cp.sqlite", out=tmp_path / "again.parquet")
    assert "verified" in set(frame["status"])
    assert list(pd.read_parquet(tmp_path / "again.parquet")["status"]) == list(frame["status"])


def test_the_public_names_are_documented():
    """Every name `import pipeline` offers has a docstring, and the README shows the API."""
    for name in ("Corrections", "Sheet", "apply", "apply_async", "plan", "plan_async",
                 "validate", "verify", "report"):
        assert getattr(pipeline, name).__doc__, name
    for method in ("validate", "plan", "apply", "verify", "report", "revert"):
        assert getattr(Corrections, method).__doc__, method
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "## Library" in readme and "pipeline.Corrections(" in readme


def test_a_notebook_can_try_everything_on_the_embedded_sandbox(tmp_path):
    """`with Corrections.sandbox() as c:` needs no account and no token."""
    with Corrections.sandbox() as c:
        result = c.apply(sheet(tmp_path), checkpoint=tmp_path / "cp.sqlite")
        assert result.counts == {"applied": 1, "not_found": 1}
        assert c.verify(tmp_path / "cp.sqlite", wait=5).verified == 1
    assert "token" not in repr(c).lower() and SANDBOX_TOKEN not in repr(c)
