"""Profile a bench's `corrections` run with py-spy and print its hotspots.

Why: a FAIL needs a file:function answer, from the very command the bench times.
Usage: python bench/profile.py {throughput,cpu,resume} [ROWS]
Needs py-spy (`pip install py-spy`); the raw profile is kept in bench/out/profile_<name>.txt
(open it with speedscope, or re-read it with bench/hotspots.py).
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BIN,
    OUT,
    apply_argv,
    env_for,
    events_file,
    run_measured,
    sandbox,
    sheet_file,
    workdir,
)
from hotspots import summarise


def profiled(argv: list[str], name: str) -> list[str]:
    spy = shutil.which("py-spy") or str(BIN / "py-spy")
    return [spy, "record", "--rate", "250", "--format", "raw",
            "-o", str(OUT / f"profile_{name}.txt"), "--", *argv]


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "throughput"
    work = workdir(f"profile_{name}")
    if name in ("throughput", "cpu"):
        rows = int(sys.argv[2]) if len(sys.argv) > 2 else (2000 if name == "throughput"
                                                            else 5000)
        latency, extra = (50.0, ["--concurrency", "16"]) if name == "throughput" else (0.0, [])
        with sandbox(events_file(rows), latency) as sb:
            m = run_measured(profiled(apply_argv(sheet_file(rows), work, *extra), name),
                             env_for(sb.url))
    elif name == "resume":
        from resume import build_checkpoint

        rows = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
        sheet = sheet_file(rows)
        shutil.copyfile(build_checkpoint(sheet, rows), work / "cp.sqlite")
        with sandbox(events_file(10), 0.0) as sb:
            db = sqlite3.connect(work / "cp.sqlite")
            with db:
                db.execute("UPDATE meta SET value = ? WHERE key = 'api_url'", (sb.url,))
            db.close()
            m = run_measured(profiled(apply_argv(sheet, work), name), env_for(sb.url))
    else:
        raise SystemExit("usage: profile.py {throughput,cpu,resume} [ROWS]")
    print(f"{name}: {rows} rows, exit {m.returncode}, {m.wall:.1f} s under py-spy")
    print(summarise(OUT / f"profile_{name}.txt", 30))


if __name__ == "__main__":
    main()
