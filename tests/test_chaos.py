"""Exactly-once under fire: faults, SIGKILLs at random instants, a SIGTERM, then reruns.

The pipeline runs as a real subprocess against a sandbox on loopback that injects 429s with
Retry-After, 500s, 503s, cut connections and apply-then-cut. Whatever happens, every
correction must end applied exactly once, with the server's own mutation_id in the report.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import REPO, read_report, write_csv

from pipeline.sandbox.faults import FaultPlan
from pipeline.sandbox.server import SANDBOX_TOKEN, SandboxServer
from pipeline.sandbox.store import Event, EventStore

ROWS = 400
SEED = int(os.environ.get("CHAOS_SEED", "20261123"))
FAULTS = dict(rate_429=0.05, retry_after=1, rate_500=0.05, rate_503=0.04, rate_cut=0.04,
              rate_apply_then_cut=0.06, latency_ms=15, latency_jitter_ms=25)


def make_store(n: int, rng: random.Random) -> tuple[EventStore, dict[str, str]]:
    """n orders in September 2026; returns the store and order_id → event_id."""
    events, ids = [], {}
    start = datetime(2026, 9, 1, tzinfo=UTC)
    for i in range(n):
        order = f"CH-{i:05d}"
        event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        ts = start + timedelta(seconds=rng.randrange(29 * 86400))
        events.append(Event(event_id, "order_completed", ts, False,
                            {"order_id": order, "final_price": "10.00"}))
        ids[order] = event_id
    return EventStore(events), ids


def start_apply(url: str, sheet: Path, cp: Path, report: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERMAVEN_")}
    env["USERMAVEN_TOKEN"] = SANDBOX_TOKEN
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "apply", str(sheet), "--api-url", url,
         "--checkpoint", str(cp), "--report", str(report), "--concurrency", "8",
         "--max-attempts", "4", "--backoff-base", "0.02", "--backoff-max", "0.2",
         "--shutdown-grace", "5", "--quiet"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.timeout(240)
def test_kills_faults_and_reruns_apply_every_correction_exactly_once(tmp_path):
    """≥20 % faults, 5 SIGKILLs, 1 SIGTERM, reruns to exit 0: no key twice, nothing lost."""
    rng = random.Random(SEED)
    store, ids = make_store(ROWS, rng)
    prices = {order: f"{rng.randrange(1, 99999) / 100:.2f}" for order in ids}
    sheet = write_csv(tmp_path / "chaos.csv", [
        {"event_type": "order_completed", "lookup_key": "order_id", "lookup_value": order,
         "event_time": "2026-09", "set.final_price": price} for order, price in prices.items()])
    cp, report = tmp_path / "chaos.checkpoint.sqlite", tmp_path / "chaos.audit.csv"
    kills, runs, exits = 0, 0, []
    with SandboxServer(store, faults=FaultPlan(seed=SEED, **FAULTS)) as sandbox:
        for _ in range(5):
            proc = start_apply(sandbox.url, sheet, cp, report)
            time.sleep(rng.uniform(0.4, 2.0))
            runs += 1
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.communicate(timeout=30)
        proc = start_apply(sandbox.url, sheet, cp, report)
        time.sleep(rng.uniform(0.5, 1.0))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        runs += 1
        exits.append(proc.returncode)
        assert proc.returncode in (143, 0, 1), err
        assert "Traceback" not in err
        for _ in range(15):
            proc = start_apply(sandbox.url, sheet, cp, report)
            out, err = proc.communicate(timeout=120)
            runs += 1
            exits.append(proc.returncode)
            assert "Traceback" not in err, err
            if proc.returncode == 0:
                break
        stats = sandbox.stats()
        lines = read_report(report)
        final = {order: sandbox.store.get(event_id).attributes["final_price"]
                 for order, event_id in ids.items()}
        server_ids = {k: r.response["mutation_id"] for k, r in sandbox.store._keys.items()}

    faults = {k: v for k, v in stats["faults"].items() if k != "latency"}
    requests = sum(stats["requests"].values())
    lost = [o for o, p in prices.items() if final[o] != p]
    print(f"\nchaos: rows={ROWS} runs={runs} kills={kills} exits={exits} requests={requests} "
          f"faults={faults} fault_rate={sum(faults.values()) / max(1, requests):.0%} "
          f"double_applied={len(stats['double_applied'])} lost={len(lost)}")
    assert kills >= 5
    assert exits[0] == 143, "SIGTERM must stop cleanly with exit 143"
    assert exits[-1] == 0
    assert sum(faults.values()) / requests >= 0.20
    assert stats["double_applied"] == []
    assert all(n == 1 for n in stats["applications"].values())
    assert lost == []
    assert len(lines) == ROWS and {r["status"] for r in lines} == {"applied"}
    for line in lines:
        assert line["mutation_id"] == server_ids[line["idempotency_key"]]
