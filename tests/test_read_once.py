"""The sheet is parsed and checked once per run, however many passes the run makes over it
(`--strict`'s check, the explicit-key pre-pass, each target); later passes see exactly the
rows the first one read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from conftest import read_report, write_csv

import pipeline.jobs as jobs
from pipeline.jobs import SheetJob, Target, apply_sheet
from pipeline.model import Correction, RowProblem, SheetDefaults
from pipeline.read_once import ReadOnce
from pipeline.run_types import RunOptions
from pipeline.sandbox.mparticle import SANDBOX_MP_KEY, SANDBOX_MP_SECRET
from pipeline.sandbox.server import SANDBOX_TOKEN
from pipeline.targets.mparticle.client import MParticleTarget
from pipeline.targets.mparticle.deliver import MParticleSetup
from pipeline.targets.mparticle.mapping import MParticleOptions

ORDERS = [("ORD-1001", "2026-09"), ("ORD-1002", "2026-09"), ("ORD-1032", "2026-10")]


def test_a_run_to_two_targets_with_explicit_keys_and_strict_parses_the_sheet_once(
        sandbox, tmp_path, monkeypatch):
    """--strict, an `idempotency_key` column (a pre-pass for order-free keys) and two targets
    make four passes over the rows; the sheet is parsed and checked once, and every row still
    lands once on each target."""
    rows = [{"event_type": "order_completed", "lookup_key": "order_id", "lookup_value": order,
             "event_time": month, "identity.customer_id": f"CUST-{i}",
             "idempotency_key": f"fix-{i}", "set.final_price": f"{20 + i}.00"}
            for i, (order, month) in enumerate(ORDERS)]
    sheet = write_csv(tmp_path / "s.csv", rows)
    parsed: list[Path] = []
    real = jobs.validate_batches

    def counting(path: Path, *args, **kw):  # the real reader, counted
        parsed.append(path)
        return real(path, *args, **kw)

    monkeypatch.setattr(jobs, "validate_batches", counting)
    setup = MParticleSetup(MParticleTarget(sandbox.url, SANDBOX_MP_KEY, SANDBOX_MP_SECRET,
                                           sandbox.url), MParticleOptions())
    out = apply_sheet(SheetJob(sheet, SheetDefaults()),
                      Target(sandbox.url, SANDBOX_TOKEN, sandbox.url),
                      RunOptions(concurrency=4, backoff_base=0.01), strict=True,
                      checkpoint=tmp_path / "cp.sqlite", report=tmp_path / "audit.csv",
                      install_signals=False, mparticle=setup)
    assert parsed == [sheet]
    assert out.exit_code == 0
    assert out.by_target == {"usermaven": {"applied": 3}, "mparticle": {"accepted": 3}}
    keys = {r["idempotency_key"] for r in read_report(tmp_path / "audit.csv")
            if r["target"] == "usermaven"}
    assert keys == {"fix-0", "fix-1", "fix-2"}


def _batches(n: int) -> list[list[Correction | RowProblem]]:
    return [[RowProblem(i + 1, f"k{i}", "x", f"problem {i}")] for i in range(n)]


def test_later_passes_replay_exactly_what_the_first_pass_read():
    """The second and third passes get the first pass's batches, in order, without reading."""
    reads = []

    def reader() -> Iterator[list[Correction | RowProblem]]:
        reads.append(1)
        yield from _batches(3)

    once = ReadOnce(reader)
    try:
        first = [[str(p) for p in b] for b in once()]
        again = [[str(p) for p in b] for b in once()]
        third = [[str(p) for p in b] for b in once()]
    finally:
        once.close()
    assert len(reads) == 1
    assert first == again == third == [[str(p) for p in b] for b in _batches(3)]


def test_a_first_pass_left_unfinished_is_read_again_in_full():
    """A pass abandoned half-way is not replayed as if it were the whole sheet."""
    reads = []

    def reader() -> Iterator[list[Correction | RowProblem]]:
        reads.append(1)
        yield from _batches(4)

    once = ReadOnce(reader)
    try:
        partial = once()
        next(partial)
        next(partial)
        whole = list(once())
    finally:
        once.close()
    assert len(reads) == 2
    assert len(whole) == 4


def test_a_run_of_one_pass_keeps_no_spool():
    """Expecting one pass (a plain run to one target), nothing is spooled: the nightly rerun
    of a large finished sheet pays nothing for passes it does not make."""
    reads = []

    def reader() -> Iterator[list[Correction | RowProblem]]:
        reads.append(1)
        yield from _batches(2)

    once = ReadOnce(reader, passes=1)
    try:
        assert len(list(once())) == 2
        assert once._spool is None
        assert len(list(once())) == 2  # an unexpected second pass reads the sheet again
    finally:
        once.close()
    assert len(reads) == 2
