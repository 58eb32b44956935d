"""A real package: the built wheel, installed in a fresh venv, runs `--version` and the
sandbox demo from a directory far from the repository (sample events are package data)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, write_csv

import pipeline


def run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the sources, installed alone in a new venv; its
    dependencies are borrowed from this test environment (a path entry, not a copy)."""
    root = tmp_path_factory.mktemp("packaging")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "pipeline", src / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = root / "dist"
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "--no-index", "-q", "-w", str(dist), str(src)], cwd=root)
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = dist.glob("corrections-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert "pipeline/sandbox/data/events.csv" in zf.namelist()
    venv = root / "venv"
    made = run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                    cwd=root).stdout.strip())
    (site / "borrowed-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    got = run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
               "--no-index", "-q", str(wheel)], cwd=root)
    assert got.returncode == 0, got.stdout + got.stderr
    return venv


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("USERMAVEN_", "PYTHON", "VIRTUAL_ENV"))}


def test_the_installed_wheel_reports_its_version(installed, tmp_path):
    """`corrections --version` of the wheel prints the package version."""
    res = run([str(installed / "bin" / "corrections"), "--version"], cwd=tmp_path,
              env=clean_env())
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"corrections, version {pipeline.__version__}"


def test_the_installed_wheel_runs_the_sandbox_demo_from_any_directory(installed, tmp_path):
    """From a directory with no repository in sight, `apply --sandbox` finds the packaged
    sample events, applies, and the package in use is the installed one."""
    sheet = write_csv(tmp_path / "fixes.csv", [
        {"event_type": "order_completed", "lookup_key": "order_id", "lookup_value": "ORD-1002",
         "event_time": "2026-09", "set.final_price": "59.00"}])
    res = run([str(installed / "bin" / "corrections"), "apply", "--sandbox", "fixes.csv"],
              cwd=tmp_path, env=clean_env())
    assert res.returncode == 0, res.stdout + res.stderr
    assert "applied" in res.stdout and (tmp_path / "fixes.audit.csv").exists()
    where = run([str(installed / "bin" / "python"), "-c",
                 "import pipeline.sandbox.sample as s; print(s.__file__)"],
                cwd=tmp_path, env=clean_env())
    assert where.stdout.startswith(str(installed)), where.stdout + where.stderr
    assert sheet.exists()
