"""Opening the checkpoint file, and creating it so that no crash can leave half of one.

A new checkpoint is built complete (schema and metadata) in a private temporary file beside
the target, flushed to disk, then linked into place: the path holds either nothing or a whole
checkpoint, whatever instant the run is killed at or the disk fails. A file left half-made by
an older release (empty, an SQLite header only, tables without metadata, and no data at all)
is recognised and finished the same way; anything holding data is never replaced.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from pathlib import Path

from pipeline.checkpoint_schema import CORE_TABLES, INDEXES_SQL, SCHEMA_SQL, SCHEMA_VERSION
from pipeline.errors import CheckpointError
from pipeline.private_files import fsync_dir, make_private, refuse_symlink
from pipeline.textsafe import neutralise_cell
from pipeline.timeutil import utcnow

#: Files SQLite keeps beside the checkpoint; a link planted at one would be written through.
SIDE_FILES = ("-wal", "-shm", "-journal")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_TMP_SUFFIX = ".creating"


def open_checkpoint(path: Path, *, create: bool = True) -> sqlite3.Connection:
    """A connection to the checkpoint at `path`, created first when there is none."""
    for suffix in ("", *SIDE_FILES):
        refuse_symlink(path.with_name(path.name + suffix), "checkpoint file")
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                _create(path, replace=False)
            elif half_created(path):
                _create(path, replace=True)
        except (OSError, sqlite3.Error) as exc:
            raise CheckpointError(
                f"cannot create the checkpoint {path}: {_reason(exc)}. Nothing was sent; free "
                "some space or make the directory writable (or use another --checkpoint), "
                "then run the same command again.") from None
    elif half_created(path):
        raise CheckpointError(
            f"{path} was never fully created (a first run was interrupted) and holds nothing; "
            "`corrections apply` finishes creating it.")
    make_private(path)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout=5000")
    db.create_function("neutralise", 1, _neutralise_sql, deterministic=True)
    return db


def use_wal(db: sqlite3.Connection) -> None:
    """WAL and its settings: only once the file is known to be a checkpoint (it rewrites the
    header, and a file that is not ours must be left byte for byte as it was)."""
    db.execute("PRAGMA journal_mode=WAL")
    # NORMAL: a committed transaction survives a killed process (not a power cut).
    db.execute("PRAGMA synchronous=NORMAL")


def _neutralise_sql(value: object) -> str:
    """`neutralise_cell` for SQL: a column may hold a number (a typed Parquet lookup value)."""
    return neutralise_cell(value if isinstance(value, str) else str(value))


def half_created(path: Path) -> bool:
    """True for a checkpoint whose creation stopped part-way: no metadata and no data.

    Zero bytes, the start of an SQLite header, an SQLite file without tables, or one holding
    only (empty) checkpoint tables without its schema version. A file with any row in any
    table, or with a table that is not ours, is not half-created.
    """
    with open(path, "rb") as fh:
        head = fh.read(100)
    if len(head) < 100 and (_SQLITE_MAGIC + bytes(100)).startswith(head):
        return True
    if not head.startswith(_SQLITE_MAGIC):
        return _all_zero(path)
    try:
        db = sqlite3.connect(path)
    except sqlite3.Error:
        return False
    try:
        tables = {r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables <= set(CORE_TABLES):
            return False
        if "meta" in tables and db.execute(
                "SELECT 1 FROM meta WHERE key = 'schema_version'").fetchone():
            return False
        return not any(db.execute(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone() for t in tables)
    except sqlite3.Error:
        return False
    finally:
        db.close()


def _all_zero(path: Path, limit: int = 1 << 16) -> bool:
    """A small file of zero bytes only: space allocated by a creation that never wrote."""
    if path.stat().st_size > limit:
        return False
    return not path.read_bytes().strip(b"\0")


def _create(path: Path, *, replace: bool) -> None:
    """Build a whole checkpoint beside `path`, then put it in place in one step."""
    _remove_leftovers(path)
    # mkstemp: O_EXCL, mode 0600 whatever the umask; SQLite gives its side files that mode
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            now = utcnow().isoformat()
            db.executescript(
                "BEGIN;" + SCHEMA_SQL + INDEXES_SQL
                + "INSERT INTO meta (key, value) VALUES ('schema_version', "
                + f"'{SCHEMA_VERSION}'), ('created_at', '{now}'), ('generation', '0');"
                + "COMMIT;")
        finally:
            db.close()
        fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            # a link never clobbers a checkpoint another process has just put there
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _remove_leftovers(path: Path) -> None:
    """Temporary files of a creation that was killed, and stale SQLite side files.

    Runs under the checkpoint's lock, before the file exists (or while it holds nothing), so
    no live run can own them; a stale WAL must never be replayed into a fresh checkpoint.
    """
    for old in path.parent.glob(f".{path.name}.*{_TMP_SUFFIX}*"):
        with contextlib.suppress(OSError):
            old.unlink()
    for suffix in SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + suffix).unlink()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
