"""Checkpoints of the previous release (schema version 1): upgraded by writing commands, read
as they are by the others, and never half-upgraded.

The files under `fixtures/v1/` were written by that release (`fixtures/make_v1_checkpoint.py`
says how); every test works on a copy.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, read_report, run_cli

from pipeline.checkpoint import Checkpoint
from pipeline.checkpoint_schema import SCHEMA_VERSION
from pipeline.errors import CheckpointWriteError
from pipeline.sandbox.app import STATE
from pipeline.sandbox.mparticle import SANDBOX_MP_KEY, SANDBOX_MP_SECRET
from pipeline.sandbox.server import SANDBOX_TOKEN, SandboxServer

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v1"
ENV = {"USERMAVEN_TOKEN": SANDBOX_TOKEN, "MPARTICLE_API_KEY": SANDBOX_MP_KEY,
       "MPARTICLE_API_SECRET": SANDBOX_MP_SECRET}
DELIVERY_TABLES = {"delivery_batches", "deliveries"}
#: The audit report's columns with mParticle among the targets, as the previous release wrote.
V1_TARGET_COLUMNS = [
    "row_number", "row_key", "target", "event_type", "lookup_key", "lookup_value", "event_id",
    "timestamp", "idempotency_key", "merge_mode", "status", "mutation_id", "http_status",
    "attempts", "error", "attributes_before", "attributes_after", "applied_at", "run_id",
    "source_message_id", "source_request_id", "endpoint"]


def previous_release_files(tmp_path: Path, name: str = "checkpoint.sqlite",
                           api_url: str | None = None) -> tuple[Path, Path]:
    """A copy of a checkpoint the previous release wrote, and of its sheet.

    The fixture was made against a sandbox on another port; an operator's API does not move
    between releases, so with `api_url` the copy's recorded API URLs name this test's sandbox
    (nothing else in the file is touched).
    """
    cp = tmp_path / "fixes.checkpoint.sqlite"
    shutil.copyfile(FIXTURES / name, cp)
    sheet = tmp_path / "fixes.csv"
    shutil.copyfile(FIXTURES / "sheet.csv", sheet)
    if api_url is not None:
        db = sqlite3.connect(cp)
        with db:
            db.execute("UPDATE meta SET value = ? WHERE key IN ('api_url', 'mparticle_url')",
                       (api_url,))
        db.close()
    return cp, sheet


def query(cp: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of `sql`, read with a connection that cannot write."""
    db = sqlite3.connect(f"file:{cp}?mode=ro", uri=True)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def schema_version(cp: Path) -> str:
    return query(cp, "SELECT value FROM meta WHERE key = 'schema_version'")[0][0]


def tables(cp: Path) -> set[str]:
    return {r[0] for r in query(cp, "SELECT name FROM sqlite_master WHERE type = 'table'")}


def apply(sandbox: SandboxServer, sheet: Path, cp: Path, *targets: str,
          ) -> subprocess.CompletedProcess[str]:
    chosen = [arg for t in targets or ("usermaven", "mparticle") for arg in ("--target", t)]
    return run_cli(["apply", str(sheet), "--api-url", sandbox.url, "--mparticle-url",
                    sandbox.url, *chosen, "--checkpoint", str(cp), "--report",
                    str(cp.parent / "audit.csv")], env=ENV)


# -- failure paths ----------------------------------------------------------------------------


def test_a_checkpoint_of_a_newer_schema_is_refused_untouched_with_exit_2(sandbox, tmp_path):
    """A file of a later release's schema is refused (exit 2, the version named), unchanged."""
    cp, sheet = previous_release_files(tmp_path, api_url=sandbox.url)
    db = sqlite3.connect(cp)
    with db:
        db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    db.close()
    before = cp.read_bytes()
    res = apply(sandbox, sheet, cp)
    assert res.returncode == 2, res.stderr
    assert (f"has checkpoint schema version 3; this corrections understands version "
            f"{SCHEMA_VERSION}. Use the matching corrections release.") in res.stderr
    assert "Traceback" not in res.stderr
    assert cp.read_bytes() == before
    assert sandbox.stats()["requests"] == {"lookup": 0, "mutation": 0}


def test_a_file_saying_version_1_without_checkpoint_tables_is_refused_untouched(
        sandbox, tmp_path):
    """Metadata claiming schema 1 over tables that are not a checkpoint: refused, not upgraded."""
    cp = tmp_path / "other.sqlite"
    db = sqlite3.connect(cp)
    with db:
        db.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                         "INSERT INTO meta VALUES ('schema_version', '1');"
                         "CREATE TABLE precious (x); INSERT INTO precious VALUES (42);")
    db.close()
    before = cp.read_bytes()
    _, sheet = previous_release_files(tmp_path)
    res = apply(sandbox, sheet, cp, "usermaven")
    assert res.returncode == 2, res.stderr
    assert "not a corrections checkpoint; refusing to touch it" in res.stderr
    assert "Traceback" not in res.stderr
    assert cp.read_bytes() == before
    assert sandbox.stats()["requests"] == {"lookup": 0, "mutation": 0}


def failing_step(db: sqlite3.Connection) -> None:
    """The real upgrade step, then a failure before the upgrade is committed."""
    from pipeline.checkpoint_migrate import add_delivery_tables
    add_delivery_tables(db)
    raise sqlite3.OperationalError("disk I/O error")


def test_an_upgrade_that_fails_raises_cleanly_and_leaves_the_file_at_version_1(
        tmp_path, monkeypatch):
    """A failing upgrade says what happened; the file keeps version 1 and no new table."""
    import pipeline.checkpoint_migrate as migrate
    cp, _ = previous_release_files(tmp_path, "usermaven_only.sqlite")
    monkeypatch.setitem(migrate.STEPS, 1, failing_step)
    with pytest.raises(CheckpointWriteError) as raised:
        Checkpoint(cp)
    message = str(raised.value)
    assert f"cannot upgrade the checkpoint {cp} from schema version 1 to {SCHEMA_VERSION}" \
        in message and "disk I/O error" in message and "nothing was changed" in message
    assert schema_version(cp) == "1"
    assert not tables(cp) & DELIVERY_TABLES
    status = run_cli(["status", "--checkpoint", str(cp)])
    assert status.returncode == 0, status.stderr
    assert "applied" in status.stdout


def test_a_run_killed_while_upgrading_leaves_version_1_and_the_next_run_upgrades(
        sandbox, tmp_path):
    """SIGKILL inside the upgrade's transaction: still version 1; the rerun upgrades, resumes."""
    cp, sheet = previous_release_files(tmp_path, "usermaven_only.sqlite", api_url=sandbox.url)
    code = (
        "import os, signal\n"
        "import pipeline.checkpoint_migrate as migrate\n"
        "real = migrate.STEPS[1]\n"
        "def killed(db):\n"
        "    real(db)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "migrate.STEPS[1] = killed\n"
        "from pipeline.checkpoint import Checkpoint\n"
        f"Checkpoint({str(cp)!r})\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert schema_version(cp) == "1" and not tables(cp) & DELIVERY_TABLES
    res = apply(sandbox, sheet, cp, "usermaven")
    assert res.returncode == 1, res.stderr  # the sheet's invalid row
    assert schema_version(cp) == str(SCHEMA_VERSION) and tables(cp) >= DELIVERY_TABLES
    statuses = {r["row_number"]: r["status"] for r in read_report(tmp_path / "audit.csv")}
    assert statuses == {**{str(n): "applied" for n in range(2, 10)}, "10": "invalid"}
    assert sandbox.stats()["double_applied"] == []


# -- upgrading and resuming -------------------------------------------------------------------


def test_a_checkpoint_of_the_previous_release_resumes_after_the_upgrade(sandbox, tmp_path):
    """The rows it applied are not sent again, the rest (and mParticle's pending batches) once."""
    cp, sheet = previous_release_files(tmp_path, api_url=sandbox.url)
    assert schema_version(cp) == "1"
    applied = dict(query(cp, "SELECT idempotency_key, mutation_id || ' ' || run_id "
                             "FROM mutations WHERE status = 'applied'"))
    failed = {k for (k,) in query(cp, "SELECT idempotency_key FROM mutations "
                                      "WHERE status = 'failed'")}
    left = query(cp, "SELECT COUNT(*) FROM rows WHERE status IN ('failed', 'pending')")[0][0]
    pending = dict(query(cp, "SELECT batch_id, body FROM delivery_batches "
                             "WHERE status = 'pending'"))
    assert applied and failed and pending and left > len(failed)  # what the fixture holds

    res = apply(sandbox, sheet, cp)
    assert res.returncode == 1, res.stderr  # the sheet's one invalid row
    assert "Traceback" not in res.stderr
    stats = sandbox.stats()
    assert not set(stats["applications"]) & set(applied)
    assert failed <= set(stats["applications"])
    assert stats["mutations"] == left and stats["double_applied"] == []
    mp = sandbox.app[STATE].mparticle
    sent = {r["batch"]["source_request_id"]: r["batch"] for r in mp.batches_received()}
    for batch_id, body in pending.items():
        assert sent[batch_id] == json.loads(body)  # the very batch committed before the upgrade
    assert mp.stats()["messages_twice"] == [] and mp.stats()["duplicates_dropped"] == 0

    with open(tmp_path / "audit.csv", encoding="utf-8", newline="") as fh:
        assert next(csv.reader(fh)) == V1_TARGET_COLUMNS
    lines = read_report(tmp_path / "audit.csv")
    by_target = {(r["target"], r["row_number"]): r["status"] for r in lines}
    for n in range(2, 10):
        assert by_target[("usermaven", str(n))] == "applied"
        assert by_target[("mparticle", str(n))] == "accepted"
    assert by_target[("usermaven", "10")] == by_target[("mparticle", "10")] == "invalid"
    kept = {r["idempotency_key"]: f"{r['mutation_id']} {r['run_id']}" for r in lines
            if r["idempotency_key"] in applied and r["target"] == "usermaven"}
    assert kept == applied  # earlier runs' mutation ids and run ids stay in the audit trail
    assert schema_version(cp) == str(SCHEMA_VERSION)

    again = apply(sandbox, sheet, cp)
    assert again.returncode == 1, again.stderr
    assert sandbox.stats()["mutations"] == left
    assert mp.stats()["batches_received"] == len(sent)


def test_a_checkpoint_without_delivery_tables_is_upgraded_and_can_add_mparticle(
        sandbox, tmp_path):
    """A Usermaven-only file of the previous release gains the delivery tables and resumes."""
    cp, sheet = previous_release_files(tmp_path, "usermaven_only.sqlite", api_url=sandbox.url)
    assert not tables(cp) & DELIVERY_TABLES
    res = apply(sandbox, sheet, cp)
    assert res.returncode == 1, res.stderr
    assert schema_version(cp) == str(SCHEMA_VERSION) and tables(cp) >= DELIVERY_TABLES
    statuses = {(r["target"], r["row_number"]): r["status"]
                for r in read_report(tmp_path / "audit.csv")}
    assert {statuses[("usermaven", str(n))] for n in range(2, 10)} == {"applied"}
    assert {statuses[("mparticle", str(n))] for n in range(2, 10)} == {"accepted"}
    assert sandbox.stats()["double_applied"] == []


def test_verify_upgrades_a_previous_release_checkpoint_before_recording(sandbox, tmp_path):
    """`verify` writes its verdicts, so it upgrades a version 1 file first (under the lock)."""
    cp, _ = previous_release_files(tmp_path, api_url=sandbox.url)
    res = run_cli(["verify", "--checkpoint", str(cp), "--api-url", sandbox.url, "--wait", "0"],
                  env=ENV)
    assert res.returncode in (0, 1), res.stderr
    assert "Traceback" not in res.stderr
    assert schema_version(cp) == str(SCHEMA_VERSION) and tables(cp) >= DELIVERY_TABLES
    assert sandbox.stats()["requests"]["lookup"] > 0
    assert sandbox.stats()["requests"]["mutation"] == 0


@pytest.mark.parametrize("name", ["checkpoint.sqlite", "usermaven_only.sqlite"])
def test_status_and_report_read_a_previous_release_checkpoint_without_upgrading_it(
        tmp_path, name):
    """Read-only commands work on a version 1 file and leave it at version 1."""
    cp, _ = previous_release_files(tmp_path, name)
    before = tables(cp)
    status = run_cli(["status", "--checkpoint", str(cp)])
    assert status.returncode == 0, status.stderr
    assert "applied" in status.stdout and "failed" in status.stdout
    out = tmp_path / "again.jsonl"
    report = run_cli(["report", "--checkpoint", str(cp), "--out", str(out)])
    assert report.returncode == 0, report.stderr
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    expected = {"usermaven", "mparticle"} if name == "checkpoint.sqlite" else {None}
    assert {x.get("target") for x in lines} == expected
    assert sum(x["status"] == "applied" for x in lines) == 5
    assert schema_version(cp) == "1" and tables(cp) == before


def test_a_new_checkpoint_holds_every_table_at_this_schema_version(tmp_path):
    """A checkpoint created now has the delivery tables from the start, at this version."""
    cp = tmp_path / "cp.sqlite"
    Checkpoint(cp).close()
    assert schema_version(cp) == str(SCHEMA_VERSION) == "2"
    assert {"meta", "runs", "rows", "duplicate_rows", "mutations"} | DELIVERY_TABLES \
        <= tables(cp)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".creating")]
