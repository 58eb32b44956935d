"""A sheet parsed and checked once per run, however many passes the run makes over it.

A run passes over its rows more than once: the explicit-key pre-pass, the primary target's
run, each other target's planning, `--strict`'s check first. Parsing and validating a large
sheet is the costly part of each pass, and a sheet could change between passes, so the first
complete pass is spooled to a private temporary file (unlinked at once, gone with the run)
and every later pass replays it: the same rows, in the same order, as the first pass saw.

A first pass left unfinished, or a spool the disk refused, is dropped; the next pass reads
the sheet again (correct, only slower).
"""

from __future__ import annotations

import logging
import pickle
import tempfile
from collections.abc import Callable, Iterator
from typing import IO

from pipeline.model import Correction, RowProblem

log = logging.getLogger("corrections")

Batch = list[Correction | RowProblem]


class ReadOnce:
    """`reader()` run once; later calls replay what it yielded.

    `passes` is how many passes the run expects: a run that makes one (the common case, and
    the nightly rerun of a finished million-row sheet) keeps no spool and pays nothing.
    """

    def __init__(self, reader: Callable[[], Iterator[Batch]], passes: int = 2) -> None:
        self._reader = reader
        self._spool: IO[bytes] | None = None
        self._complete = False
        self._left = passes  # passes still expected, this one included
        self.passes = 0  # how many times the sheet itself was read (tests check 1)

    def __call__(self) -> Iterator[Batch]:
        self._left -= 1
        if self._complete and self._spool is not None:
            return self._replay(self._spool)
        return self._first(keep=self._left > 0)

    def _first(self, keep: bool) -> Iterator[Batch]:
        self.close()
        self.passes += 1
        spool: IO[bytes] | None = None
        try:  # kept open past this pass (for the replays), closed by `close`
            if keep:
                spool = tempfile.TemporaryFile(prefix="corrections-rows-")  # noqa: SIM115
        except OSError:
            spool = None
        try:
            for batch in self._reader():
                if spool is not None:
                    try:
                        pickle.dump(batch, spool, protocol=pickle.HIGHEST_PROTOCOL)
                    except OSError as exc:  # a full disk costs a second read, nothing else
                        log.info("cannot keep the checked rows for the run's later passes "
                                 "(%s); they read the sheet again", exc.strerror or exc)
                        spool.close()
                        spool = None
                yield batch
        except BaseException:  # abandoned or broken: never replayed as the whole sheet
            if spool is not None:
                spool.close()
            raise
        if spool is not None:
            self._spool, self._complete = spool, True

    @staticmethod
    def _replay(spool: IO[bytes]) -> Iterator[Batch]:
        spool.flush()
        spool.seek(0)
        while True:
            try:
                batch: Batch = pickle.load(spool)
            except EOFError:
                return
            yield batch

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
        self._spool, self._complete = None, False
