"""Shared fixtures: one sandbox on a real loopback port for the whole session."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from pipeline.sandbox.server import SANDBOX_TOKEN, SandboxServer

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"

#: Where the project's shared specifications live: beside the repository, or named by the env.
SHARED_ENV = "CORRECTIONS_SHARED"
#: Set (CI does) to make a missing shared specification a failure instead of a skip.
REQUIRE_SHARED_ENV = "CORRECTIONS_REQUIRE_SHARED"


def shared_dir() -> Path:
    """The shared specifications directory: $CORRECTIONS_SHARED, else `../shared`."""
    named = os.environ.get(SHARED_ENV)
    return Path(named) if named else REPO.parent / "shared"


def shared_file(relative: str) -> Path:
    """A file from the shared specifications; the test skips (or, under CI, fails) without it.

    A bare clone has no `../shared`; its tests that need a published specification (such as
    mParticle's batch schema) say how to get it rather than erroring.
    """
    path = shared_dir() / relative
    if path.is_file():
        return path
    reason = (f"needs {relative} from the shared specifications, not found at {path}: place the "
              f"shared directory beside the repository (../shared) or set {SHARED_ENV}=DIR")
    if os.environ.get(REQUIRE_SHARED_ENV, "") not in ("", "0"):
        pytest.fail(f"{reason} ({REQUIRE_SHARED_ENV} is set, so this is an error)",
                    pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    """The emulator with sample_data/ events, started once per test session."""
    with SandboxServer() as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> Iterator[SandboxServer]:
    """The session sandbox, reset to its loaded events and with no faults, for one test."""
    sandbox_server.reset()
    sandbox_server.set_faults(rate_429=0, rate_500=0, rate_503=0, rate_cut=0,
                              rate_apply_then_cut=0, latency_ms=0, latency_jitter_ms=0)
    sandbox_server.store.propagation_delay = 0
    yield sandbox_server
    sandbox_server.reset()


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("USERMAVEN_TOKEN", SANDBOX_TOKEN)
    return SANDBOX_TOKEN


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]],
              columns: Sequence[str] | None = None) -> Path:
    cols = list(columns or dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


def read_report(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def run_cli(args: Sequence[str], *, env: Mapping[str, str] | None = None,
            cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`corrections ...` as a real subprocess (exit codes, stdout/stderr as users see them)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("USERMAVEN_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True,
                          text=True, env=full_env, cwd=cwd or REPO, timeout=timeout)
