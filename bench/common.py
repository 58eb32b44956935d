"""Shared helpers for the benches: deterministic data, the sandbox process, measured runs.

Every bench runs the real `corrections` console script as a child process, so what is
measured is what a cron job pays: interpreter start-up, imports, the run, the report.
CPU time and peak RSS come from `os.wait4` on that one child (exact, no polling), so the
sandbox (a separate process) is never counted against the pipeline.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
BIN = Path(sys.executable).parent
CORRECTIONS = BIN / "corrections"

sys.path.insert(0, str(ROOT))  # so `pipeline` imports without an installed package


def byte_compile() -> None:
    """Byte-compile `pipeline` as an install does (pip writes the .pyc files), so the benches
    measure the start-up an installed tool pays. An editable checkout run with
    PYTHONDONTWRITEBYTECODE=1 would otherwise recompile every module on every start
    (~0.1 s). Up-to-date files are left alone; BENCH_NO_PYC=1 skips this to measure that."""
    if os.environ.get("BENCH_NO_PYC", "") in ("", "0"):
        import compileall

        compileall.compile_dir(ROOT / "pipeline", quiet=1)


byte_compile()

from pipeline.sandbox.server import SANDBOX_TOKEN, start_subprocess  # noqa: E402

#: Every generated event lives in this month; sheets use `event_time` = this month.
MONTH = "2026-03"
EVENT_TYPE = "order_completed"
#: Namespace for deterministic event ids (uuid5 of the order id).
_NS = uuid.UUID("0b6c0f52-8d7e-4a43-9d0e-5b1f4f1e2a77")
RESULT_PREFIX = "BENCH-RESULT "


# --------------------------------------------------------------------------- data


def order_id(i: int) -> str:
    return f"ORD-{i:07d}"


def event_id(i: int) -> str:
    return str(uuid.uuid5(_NS, order_id(i)))


def old_price(i: int) -> str:
    return f"{10 + i % 90}.{i % 100:02d}"


def new_price(i: int) -> str:
    """Always differs from `old_price`, so every row needs a mutation."""
    return f"{110 + i % 90}.{i % 100:02d}"


def _fresh(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


def _timestamp(rng: random.Random) -> str:
    day = rng.randint(1, 31)
    return f"{MONTH}-{day:02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:" \
           f"{rng.randint(0, 59):02d}"


def events_file(n: int, *, extra_attrs: int = 0) -> Path:
    """CSV of `n` order events (order i has ORD-i, old_price(i)); made once, then reused.

    `extra_attrs` adds attributes attr_0..attr_{k-1} = "v<j>-<i>" (for no-op rows).
    """
    path = OUT / "data" / f"events_{n}_x{extra_attrs}.csv"
    if _fresh(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(n)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["event_id", "event_type", "_timestamp", "_is_deleted", "event_attributes"])
        for i in range(n):
            attrs: dict[str, Any] = {"order_id": order_id(i), "final_price": old_price(i),
                                     "currency": "USD", "items": 1 + i % 5}
            for j in range(extra_attrs):
                attrs[f"attr_{j}"] = f"v{j}-{i}"
            w.writerow([event_id(i), EVENT_TYPE, _timestamp(rng), 0,
                        json.dumps(attrs, separators=(",", ":"))])
    tmp.replace(path)
    return path


SHEET_HEADER = ["event_type", "lookup_key", "lookup_value", "event_time", "set.final_price"]


def sheet_file(n: int, fmt: str = "csv") -> Path:
    """A correction sheet of `n` lookup rows: row i sets order i's final_price to a new value.

    Each row needs one lookup (`order_id` = ORD-i in the month) and one mutation.
    """
    path = OUT / "data" / f"sheet_{n}.{fmt}"
    if _fresh(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "csv":
        with tmp.open("w", newline="", encoding="utf-8") as f:
            f.write(",".join(SHEET_HEADER) + "\n")
            step = 100_000
            for start in range(0, n, step):
                f.write("".join(
                    f"{EVENT_TYPE},order_id,{order_id(i)},{MONTH},{new_price(i)}\n"
                    for i in range(start, min(n, start + step))))
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([(c, pa.string()) for c in SHEET_HEADER])
        with pq.ParquetWriter(tmp, schema) as writer:
            step = 100_000
            for start in range(0, n, step):
                idx = range(start, min(n, start + step))
                writer.write_table(pa.table({
                    "event_type": [EVENT_TYPE] * len(idx),
                    "lookup_key": ["order_id"] * len(idx),
                    "lookup_value": [order_id(i) for i in idx],
                    "event_time": [MONTH] * len(idx),
                    "set.final_price": [new_price(i) for i in idx],
                }, schema=schema), row_group_size=50_000)
    else:
        raise ValueError(fmt)
    tmp.replace(path)
    return path


def head_sheet(src: Path, n: int) -> Path:
    """The first `n` data rows of a CSV sheet (same content, fewer rows)."""
    path = OUT / "data" / f"{src.stem}_head{n}.csv"
    if _fresh(path):
        return path
    with src.open(encoding="utf-8") as f:
        lines = [next(f) for _ in range(n + 1)]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def workdir(name: str) -> Path:
    """An empty directory for one bench's checkpoint and report."""
    path = OUT / "runs" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# --------------------------------------------------------------------------- sandbox


@dataclass
class Sandbox:
    """A sandbox in its own process (so its CPU never counts against the pipeline)."""

    proc: subprocess.Popen[str]
    url: str

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.url + "/_sandbox/stats", timeout=30).json()

    def cpu_seconds(self) -> float:
        import psutil

        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system


@contextlib.contextmanager
def sandbox(events: Path, latency_ms: float = 0.0, *extra: str) -> Iterator[Sandbox]:
    proc, url = start_subprocess(["--events", str(events), "--latency-ms", str(latency_ms),
                                  *extra], timeout=120)
    try:
        yield Sandbox(proc, url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def env_for(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["USERMAVEN_TOKEN"] = SANDBOX_TOKEN
    env["USERMAVEN_API_URL"] = url
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------- measured runs


@dataclass
class Measured:
    """One child process: wall time, CPU, peak RSS, exit code, output."""

    argv: list[str]
    wall: float
    user: float
    sys: float
    maxrss_mb: float
    returncode: int
    stdout: str
    stderr: str
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu(self) -> float:
        return self.user + self.sys


def run_measured(argv: Sequence[str], env: dict[str, str] | None = None,
                 cwd: Path = ROOT) -> Measured:
    """Run one command; wall clock around it, rusage of exactly that child via wait4."""
    out_dir = OUT / "logs"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"{os.getpid()}-{time.monotonic_ns()}"
    out_path, err_path = out_dir / f"{stamp}.out", out_dir / f"{stamp}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout = out_path.read_text(encoding="utf-8", errors="replace")
    stderr = err_path.read_text(encoding="utf-8", errors="replace")
    out_path.unlink()
    err_path.unlink()
    m = Measured(list(argv), wall, ru.ru_utime, ru.ru_stime, ru.ru_maxrss / 1024,
                 proc.returncode, stdout, stderr)
    m.summary = _summary(stdout)
    return m


_REQUESTS = re.compile(r"^requests: (?P<requests>\d+) \((?P<lookups>\d+) lookups, "
                       r"(?P<mutations>\d+) mutations\).* (?P<seconds>[\d.]+) s \(")
_COUNT = re.compile(r"^  (?P<status>[a-z_]+) +(?P<n>\d+)$")


def _summary(stdout: str) -> dict[str, Any]:
    """What apply's one-screen summary says: requests, lookups, mutations, seconds, counts.

    Parsed from the default text output, so the measured run is the default one (the
    `--log-format json` mode would add a log line per row).
    """
    out: dict[str, Any] = {"counts": {}}
    for line in stdout.splitlines():
        if m := _REQUESTS.match(line):
            out.update({k: float(v) if k == "seconds" else int(v)
                        for k, v in m.groupdict().items()})
        elif m := _COUNT.match(line):
            out["counts"][m["status"]] = int(m["n"])
    return out


def apply_argv(sheet: Path, work: Path, *extra: str) -> list[str]:
    return [str(CORRECTIONS), "apply", str(sheet), "--checkpoint", str(work / "cp.sqlite"),
            "--report", str(work / "audit.csv"), *extra]


def require_ok(m: Measured, allowed: tuple[int, ...] = (0,)) -> None:
    if m.returncode not in allowed:
        raise SystemExit(f"command failed with exit {m.returncode}: {' '.join(m.argv)}\n"
                         f"--- stderr (tail) ---\n{m.stderr[-3000:]}")


def report_counts(path: Path) -> dict[str, int]:
    """Status counts as the audit report has them (one line per row)."""
    counts: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


def startup_cost() -> Measured:
    """What `corrections --help` alone costs: interpreter start plus imports."""
    return run_measured([str(CORRECTIONS), "--help"])


# --------------------------------------------------------------------------- output


def verdict(name: str, figure: str, target: str, ok: bool | None,
            extra: dict[str, Any] | None = None) -> None:
    """Print the human line and the machine line `run_all.py` collects."""
    word = "INFO" if ok is None else ("PASS" if ok else "FAIL")
    print(f"{name}: {figure}   target: {target}   {word}", flush=True)
    payload = {"name": name, "figure": figure, "target": target, "result": word,
               **(extra or {})}
    print(RESULT_PREFIX + json.dumps(payload), flush=True)


def fmt_s(seconds: float) -> str:
    return f"{seconds:.2f} s"
