"""An exclusive lock beside the checkpoint so two runs never work one checkpoint at once.

`flock` is released by the kernel when the holder dies, so a SIGKILLed run never leaves a
stale lock behind; the pid written inside only serves the error message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from pipeline.errors import LockedError
from pipeline.private_files import open_private


def lock_path_for(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".lock")


class RunLock:
    def __init__(self, checkpoint: Path) -> None:
        self.path = lock_path_for(checkpoint)
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # 0600 and O_NOFOLLOW: a link planted here must not get another file truncated
        fd = open_private(self.path, "lock file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(
                f"another run (pid {holder}) holds the lock {self.path}; it works on the same "
                "checkpoint. Wait for it to finish, or use another --checkpoint."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
