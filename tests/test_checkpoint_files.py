"""Checkpoint, lock and report files: created whole, private, and never through a link."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, read_report, run_cli, write_csv

from pipeline.checkpoint import Checkpoint
from pipeline.checkpoint_schema import INDEXES_SQL, SCHEMA_SQL
from pipeline.errors import CheckpointError
from pipeline.lock import RunLock
from pipeline.sandbox.server import SANDBOX_TOKEN

ENV = {"USERMAVEN_TOKEN": SANDBOX_TOKEN}
ORDERS = ("ORD-1001", "ORD-1002", "ORD-1004")


def sheet(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "fixes.csv", [
        {"event_type": "order_completed", "lookup_key": "order_id", "lookup_value": order,
         "event_time": "2026-09", "set.final_price": f"{100 + i}.25"}
        for i, order in enumerate(ORDERS)])


def apply(sandbox, tmp_path: Path, cp: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(["apply", str(sheet(tmp_path)), "--api-url", sandbox.url,
                    "--checkpoint", str(cp), "--report", str(tmp_path / "audit.csv")], env=ENV)


def assert_applied_exactly_once(sandbox, tmp_path: Path, cp: Path) -> None:
    first = apply(sandbox, tmp_path, cp)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    assert [r["status"] for r in read_report(tmp_path / "audit.csv")] == ["applied"] * 3
    again = apply(sandbox, tmp_path, cp)
    assert again.returncode == 0, again.stderr
    stats = sandbox.stats()
    assert stats["mutations"] == 3 and stats["double_applied"] == []
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{cp.name}")]


def old_style_creation(path: Path, steps: str) -> None:
    """Leave `path` as an older release did when killed part-way through creating it."""
    code = (
        "import os, signal, sqlite3, sys\n"
        "from pipeline.checkpoint_schema import SCHEMA_SQL, INDEXES_SQL\n"
        f"db = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
        "db.execute('PRAGMA journal_mode=WAL')\n"
        f"if {steps!r} == 'tables':\n"
        "    db.executescript(SCHEMA_SQL + INDEXES_SQL)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=30)
    assert proc.returncode == -signal.SIGKILL


def zero_bytes(path: Path) -> None:
    path.touch()


def header_start(path: Path) -> None:
    path.write_bytes(b"SQLite format")


def header_only_killed(path: Path) -> None:
    old_style_creation(path, "header")


def tables_without_metadata_killed(path: Path) -> None:
    old_style_creation(path, "tables")


def tables_without_metadata(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_SQL + INDEXES_SQL)
    db.close()


@pytest.mark.parametrize("leave", [zero_bytes, header_start, header_only_killed,
                                   tables_without_metadata_killed, tables_without_metadata])
def test_a_checkpoint_left_half_created_is_finished_and_the_run_applies_once(
        sandbox, tmp_path, leave):
    """A checkpoint whose creation stopped part-way is finished by the next run."""
    cp = tmp_path / "cp.sqlite"
    leave(cp)
    assert_applied_exactly_once(sandbox, tmp_path, cp)


def test_a_run_killed_while_creating_the_checkpoint_leaves_no_file_the_next_run_refuses(
        sandbox, tmp_path):
    """SIGKILL in the middle of creating the checkpoint: the rerun creates it and applies once."""
    cp = tmp_path / "cp.sqlite"
    code = (
        "import os, sys, time\n"
        "real = os.fsync\n"
        "def slow(fd):\n"
        "    print('creating', flush=True); time.sleep(60)\n"
        "os.fsync = slow\n"
        "from pipeline.checkpoint import Checkpoint\n"
        f"Checkpoint({str(cp)!r})\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "creating"
    proc.kill()
    proc.wait(timeout=10)
    proc.stdout.close()
    assert not cp.exists()
    assert_applied_exactly_once(sandbox, tmp_path, cp)


@pytest.mark.parametrize(("where", "code"), [("fsync", errno.ENOSPC), ("link", errno.EROFS)])
def test_a_checkpoint_creation_failing_part_way_leaves_nothing_behind(
        sandbox, tmp_path, monkeypatch, where, code):
    """Disk full or read-only while creating: a clear error, no file, and the rerun applies."""
    cp = tmp_path / "cp.sqlite"

    def failing(*args: object) -> None:
        raise OSError(code, os.strerror(code))

    with monkeypatch.context() as patch:
        patch.setattr(os, where, failing)
        with pytest.raises(CheckpointError, match=f"cannot create the checkpoint {cp}: "
                           f"{os.strerror(code)}. Nothing was sent"):
            Checkpoint(cp)
    assert list(tmp_path.iterdir()) == []
    assert_applied_exactly_once(sandbox, tmp_path, cp)


def test_a_checkpoint_holding_data_is_never_taken_for_a_half_created_one(tmp_path):
    """Checkpoint tables without a schema version but with rows are refused, not replaced."""
    path = tmp_path / "cp.sqlite"
    tables_without_metadata(path)
    db = sqlite3.connect(path)
    db.execute("INSERT INTO runs (run_id) VALUES ('r1')")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="not a corrections checkpoint"):
        Checkpoint(path)
    assert path.read_bytes() == before


def test_an_empty_sqlite_file_with_a_table_of_its_own_is_not_replaced(tmp_path):
    """An SQLite file with an (empty) table that is not ours is someone else's: refused."""
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE precious (x)")
    db.commit()
    db.close()
    with pytest.raises(CheckpointError, match="not a corrections checkpoint"):
        Checkpoint(path)
    db = sqlite3.connect(path)
    assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("precious",)]
    db.close()


def test_status_of_a_half_created_checkpoint_says_apply_finishes_it(tmp_path):
    """Read-only commands do not create: they say the file was never finished."""
    cp = tmp_path / "cp.sqlite"
    cp.touch()
    res = run_cli(["status", "--checkpoint", str(cp)])
    assert res.returncode == 2
    assert "never fully created" in res.stderr and "Traceback" not in res.stderr
    assert cp.read_bytes() == b""


def private(path: Path) -> bool:
    return stat.S_IMODE(os.stat(path).st_mode) == 0o600


def apply_with_umask(sandbox, tmp_path: Path, umask: int) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("USERMAVEN_")}, **ENV}
    cmd = [sys.executable, "-m", "pipeline", "apply", str(sheet(tmp_path)), "--api-url",
           sandbox.url, "--checkpoint", str(tmp_path / "cp.sqlite"), "--report",
           str(tmp_path / "audit.csv")]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
                          preexec_fn=lambda: os.umask(umask))


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_checkpoint_lock_and_report_are_private_whatever_the_umask(sandbox, tmp_path, umask):
    """The checkpoint, its lock and the report are created 0600 even under umask 000."""
    res = apply_with_umask(sandbox, tmp_path, umask)
    assert res.returncode == 0, res.stderr
    for name in ("cp.sqlite", "cp.sqlite.lock", "audit.csv"):
        assert private(tmp_path / name), name


def test_the_checkpoints_wal_and_shm_files_are_private(tmp_path):
    """SQLite's side files (WAL, shared memory) get the checkpoint's 0600, not the umask's."""
    old = os.umask(0)
    try:
        cp = Checkpoint(tmp_path / "cp.sqlite")
        try:
            cp.start_run("r1", "apply", "fixes.csv", "f", {})
            cp.commit()
            for suffix in ("", "-wal", "-shm"):
                assert private(tmp_path / f"cp.sqlite{suffix}"), suffix
        finally:
            cp.close()
    finally:
        os.umask(old)


def test_an_existing_world_readable_checkpoint_and_lock_are_made_private(tmp_path):
    """A checkpoint and lock made 0644 by an older release are tightened to 0600 when used."""
    Checkpoint(tmp_path / "cp.sqlite").close()
    os.chmod(tmp_path / "cp.sqlite", 0o644)
    (tmp_path / "cp.sqlite.lock").touch(mode=0o644)
    os.chmod(tmp_path / "cp.sqlite.lock", 0o644)
    with RunLock(tmp_path / "cp.sqlite"):
        Checkpoint(tmp_path / "cp.sqlite").close()
    assert private(tmp_path / "cp.sqlite") and private(tmp_path / "cp.sqlite.lock")


@pytest.mark.parametrize("planted", ["cp.sqlite", "cp.sqlite.lock", "cp.sqlite-wal",
                                     "cp.sqlite-shm", "audit.csv"])
def test_a_planted_symlink_is_refused_and_its_target_left_intact(sandbox, tmp_path, planted):
    """A link at the checkpoint, lock, WAL, SHM or report path: exit 2, nothing sent."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / planted).symlink_to(victim)
    res = apply(sandbox, tmp_path, tmp_path / "cp.sqlite")
    assert res.returncode == 2, res.stderr
    assert f"{tmp_path / planted} is a symbolic link" in res.stderr
    assert "Traceback" not in res.stderr
    assert victim.read_text() == "precious\n"
    assert sandbox.stats()["mutations"] == 0
    assert (tmp_path / planted).is_symlink()


def test_a_dangling_symlink_at_the_checkpoint_path_creates_nothing_through_it(
        sandbox, tmp_path):
    """A link to a missing file is refused too: nothing is created where it points."""
    (tmp_path / "cp.sqlite").symlink_to(tmp_path / "elsewhere.sqlite")
    res = apply(sandbox, tmp_path, tmp_path / "cp.sqlite")
    assert res.returncode == 2 and "is a symbolic link" in res.stderr
    assert not (tmp_path / "elsewhere.sqlite").exists()
