"""Resume: rerunning `apply` over a sheet the checkpoint already holds as applied.

A cron rerun after success should cost little: read the sheet, see every row done, send
nothing, rewrite the report. Target: >= 100 000 rows/s skipped end to end, peak RSS <= 300 MB,
zero requests. The 1 000 000-row checkpoint is built directly with the pipeline's own
`Checkpoint` (register → record_intents → the outcome columns `record_outcome` writes, in one
transaction per batch), since applying a million rows against the sandbox would take hours.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    MONTH,
    OUT,
    SANDBOX_TOKEN,
    apply_argv,
    env_for,
    event_id,
    events_file,
    old_price,
    require_ok,
    run_measured,
    sandbox,
    sheet_file,
    verdict,
    workdir,
)

from pipeline.checkpoint import Checkpoint, Intent, workspace_id
from pipeline.jobs import SheetJob, sheet_digest
from pipeline.keys import idempotency_key
from pipeline.model import Correction, SheetDefaults, Status
from pipeline.sheet import fingerprint
from pipeline.timeutil import utcnow
from pipeline.validate import validate_batches

ROWS = 1_000_000
TARGET_RATE = 100_000.0
MAX_RSS_MB = 300.0
PLACEHOLDER_URL = "http://127.0.0.1:1"


def build_checkpoint(sheet: Path, rows: int) -> Path:
    """A checkpoint where every row of `sheet` is applied, as a finished run leaves it."""
    path = OUT / "data" / f"resume_{rows}.v2.checkpoint.sqlite"
    if path.exists():
        return path
    tmp = path.with_name(path.name + ".building")
    for p in tmp.parent.glob(tmp.name + "*"):
        p.unlink()
    t0 = time.perf_counter()
    cp = Checkpoint(tmp)
    try:
        cp.bind_target(PLACEHOLDER_URL, workspace_id(SANDBOX_TOKEN))
        run_id = "run-bench-build"
        gen = cp.start_run(run_id, "apply", str(sheet), fingerprint(sheet), {})
        done = 0
        cp.db.execute("PRAGMA synchronous=OFF")  # a bench fixture: speed over durability
        for batch in validate_batches(sheet, SheetDefaults(), batch_size=5000):
            reg = cp.register(batch, gen, run_id)
            intents = [_intent(c) for c, _ in reg.todo]
            cp.record_intents(intents, run_id)
            done += len(intents)
        # Then every answer, as record_outcome / set_row_status write it (set-wise, one
        # transaction: a million point updates would take minutes).
        now = utcnow().isoformat()
        with cp.db:
            cp.db.execute("BEGIN")
            cp.db.execute(
                "UPDATE mutations SET status = ?, mutation_id = 'mut-' || substr("
                "idempotency_key, 9, 36), http_status = 200, attempts = 1, applied_at = ?, "
                "run_id = ?", (Status.APPLIED.value, now, run_id))
            cp.db.execute("UPDATE rows SET status = ?, error = NULL, run_id = ?, "
                          "updated_at = ?", (Status.APPLIED.value, run_id, now))
        cp.finish_run(run_id, exit_code=0, requests=2 * done, retries=0, rows_new=done,
                      rows_done=0, rows_gone=0)
        # as a finished run leaves it: every row of this sheet registered in this generation
        cp.note_change(run_id)
        cp.mark_complete(gen, sheet_digest(SheetJob(sheet), fingerprint(sheet)))
        cp.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        cp.close()
    if done != rows:
        raise SystemExit(f"built {done} applied rows, expected {rows}")
    tmp.replace(path)
    print(f"(built the {rows}-row checkpoint in {time.perf_counter() - t0:.0f} s, once; "
          f"cached at {path})")
    return path


def _intent(c: Correction) -> Intent:
    assert c.lookup_value is not None
    i = int(c.lookup_value.split("-")[1])
    eid = event_id(i)
    return Intent(
        row_key=c.row_key, event_id=eid,
        idempotency_key=idempotency_key("", eid, c.attributes, c.merge_mode),
        timestamp=f"{MONTH}-15T12:00:00.000Z", merge_mode=c.merge_mode,
        attributes_after=dict(c.attributes),
        attributes_before={"order_id": c.lookup_value, "final_price": old_price(i),
                           "currency": "USD", "items": 1 + i % 5},
        status=Status.PENDING, seq=0,
    )


def measure(rows: int) -> dict[str, float]:
    """One `corrections apply` over `rows` rows that the checkpoint holds as applied."""
    sheet = sheet_file(rows)
    pristine = build_checkpoint(sheet, rows)
    work = workdir(f"resume_{rows}")
    cp_path = work / "cp.sqlite"
    shutil.copyfile(pristine, cp_path)
    with sandbox(events_file(10), 0.0) as sb:
        db = sqlite3.connect(cp_path)
        with db:
            db.execute("UPDATE meta SET value = ? WHERE key = 'api_url'", (sb.url,))
        db.close()
        m = run_measured(apply_argv(sheet, work), env_for(sb.url))
        stats = sb.stats()
    require_ok(m)
    sent = stats["requests"]["lookup"] + stats["requests"]["mutation"]
    applied = m.summary.get("counts", {}).get("applied", 0)
    print(f"{rows:>9} rows already applied: {m.wall:5.1f} s end to end = "
          f"{rows / m.wall:8,.0f} rows/s; in-run {m.summary.get('seconds', 0):.1f} s; "
          f"CPU {m.cpu:.1f} s; peak RSS {m.maxrss_mb:.0f} MB; requests sent {sent}; "
          f"applied in summary {applied}")
    return {"rate": rows / m.wall, "maxrss_mb": m.maxrss_mb, "sent": sent,
            "applied": applied, "wall": m.wall}


def main() -> None:
    small = measure(ROWS // 10)
    big = measure(ROWS)
    print(f"RSS grows {big['maxrss_mb'] / small['maxrss_mb']:.2f}× for 10× the rows")
    ok = (big["rate"] >= TARGET_RATE and big["maxrss_mb"] <= MAX_RSS_MB and big["sent"] == 0
          and big["applied"] == ROWS)
    verdict("resume (1M done rows)",
            f"{big['rate']:,.0f} rows/s, peak {big['maxrss_mb']:.0f} MB, {big['sent']:.0f} "
            "requests",
            f">= {TARGET_RATE:,.0f} rows/s, <= {MAX_RSS_MB:g} MB, 0 requests", ok,
            {"rate": big["rate"], "maxrss_mb": big["maxrss_mb"], "requests": big["sent"],
             "rss_100k": small["maxrss_mb"]})


if __name__ == "__main__":
    main()
