"""Files this tool owns on disk: private (0600) and never reached through a symbolic link.

A checkpoint, its lock and its reports hold event attributes; a link planted at one of their
paths must not lead a run to write, truncate or expose another file. Every such path is
checked here (and opened with `O_NOFOLLOW` where we open it ourselves).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from pipeline.errors import CheckpointError, CorrectionsError

#: Owner read/write only, whatever the umask.
PRIVATE_MODE = 0o600


def refuse_symlink(path: Path, what: str,
                   error: type[CorrectionsError] = CheckpointError) -> None:
    """Raise `error` (exit 2) when `path` is a symbolic link or not a regular file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise error(
            f"{what} {path} is a symbolic link; refusing to follow it (it could make this run "
            "overwrite another file). Remove the link or point the option at a real path.")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {path} is not a regular file; point the option at another path.")


def open_private(path: Path, what: str, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    """Open (or create 0600) `path` without following a link; a clear error if it is one."""
    refuse_symlink(path, what)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link appeared between the check and the open
            refuse_symlink(path, what)
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(
                f"{what} {path} is not a regular file; point the option at another path.")
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.fchmod(fd, PRIVATE_MODE)  # made readable to others by an older release
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_private(path: Path) -> None:
    """Tighten a file of ours made readable by others (by an older release) to 0600.

    SQLite gives the WAL and shared-memory files the mode of the checkpoint, so this covers
    them too. Files owned by someone else are left alone (chmod would fail anyway).
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077 and st.st_uid == os.geteuid():
        os.chmod(path, PRIVATE_MODE)


def fsync_dir(directory: Path) -> None:
    """Make a rename or link in `directory` durable (best effort where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
