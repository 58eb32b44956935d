"""Tests that need the shared specifications: found, or skipped with a way to get them; CI
(which has them) turns a skip into a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, REQUIRE_SHARED_ENV, SHARED_ENV, shared_dir

SCHEMA_TEST = ("tests/test_mparticle.py::"
               "test_the_published_schema_rejects_what_the_pipeline_never_sends")


def run_pytest(test: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items()
            if k not in (SHARED_ENV, REQUIRE_SHARED_ENV)}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           test], capture_output=True, text=True, env=full, cwd=REPO,
                          timeout=120)


def test_a_test_needing_missing_shared_specs_skips_and_says_how_to_get_them(tmp_path):
    """Without the shared directory the schema test is skipped with a reason naming the fix."""
    res = run_pytest(SCHEMA_TEST, **{SHARED_ENV: str(tmp_path / "nowhere")})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 skipped" in res.stdout
    assert "../shared" in res.stdout and SHARED_ENV in res.stdout


def test_ci_mode_turns_a_missing_shared_spec_into_a_failure(tmp_path):
    """With CORRECTIONS_REQUIRE_SHARED=1 a missing specification fails the test run."""
    res = run_pytest(SCHEMA_TEST, **{SHARED_ENV: str(tmp_path / "nowhere"),
                                     REQUIRE_SHARED_ENV: "1"})
    assert res.returncode == 1, res.stdout + res.stderr
    assert ("1 failed" in res.stdout or "1 error" in res.stdout) and "skipped" not in res.stdout
    assert REQUIRE_SHARED_ENV in res.stdout


def test_shared_specs_are_found_through_the_environment(tmp_path):
    """CORRECTIONS_SHARED points the tests at a copy of the specifications anywhere."""
    rel = Path("specs/mparticle/mparticle.inbound.eventsapi.schema.json")
    source = shared_dir() / rel
    copy = tmp_path / "specs-copy"
    (copy / rel).parent.mkdir(parents=True)
    if source.is_file():
        (copy / rel).write_bytes(source.read_bytes())
    else:  # a bare clone: the smallest draft-07 schema shows the lookup works
        (copy / rel).write_text('{"$schema": "http://json-schema.org/draft-07/schema#"}')
    res = run_pytest(SCHEMA_TEST, **{SHARED_ENV: str(copy), REQUIRE_SHARED_ENV: "1"})
    if source.is_file():
        assert res.returncode == 0, res.stdout + res.stderr
        assert "1 passed" in res.stdout
    else:  # the stand-in is found and used (no skip): it accepts everything, so the test fails
        assert "skipped" not in res.stdout and "1 failed" in res.stdout, res.stdout
        assert "not found at" not in res.stdout


def test_ci_entry_point_requires_the_shared_specs_and_runs_make_test():
    """`.ci/run` exports CORRECTIONS_REQUIRE_SHARED=1 and then runs `make test`."""
    lines = [ln.strip() for ln in (REPO / ".ci/run").read_text().splitlines()]
    export = lines.index(f"export {REQUIRE_SHARED_ENV}=1")
    assert lines.index("make test") > export
