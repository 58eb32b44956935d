"""Start-up stays lean: the command line loads only the libraries the command in hand uses.

A short run is mostly start-up, so these guard what a command imports, not how long it takes:
each command runs as `python -m pipeline ...` in a fresh process that writes the names in
its `sys.modules` (and the collector's frozen count) to a file as it exits.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from conftest import REPO, write_csv

from pipeline.sandbox.server import SANDBOX_TOKEN

#: Libraries no CSV run, validation or help text needs.
SHEET_FORMATS = ("pyarrow", "python_calamine", "pandas", "numpy")
#: Needed only with --metrics-file, a terminal, --rate, a retry, the emulator, or a saved
#: plan; and no installed-package metadata scan on the way.
OPTIONAL = ("prometheus_client", "rich", "pygments", "aiolimiter", "tenacity", "aiohttp.web",
            "pipeline.sandbox.app", "pipeline.plan_jobs", "pipeline.planfile",
            "importlib.metadata")
#: Test-only libraries.
TESTING = ("hypothesis", "openpyxl", "pytest")

_PROBE = """
import atexit, gc, json, runpy, sys
out = sys.argv[1]
def dump():
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"modules": sorted(sys.modules), "frozen": gc.get_freeze_count()}, f)
atexit.register(dump)
sys.argv = ["corrections", *sys.argv[2:]]
runpy.run_module("pipeline", run_name="__main__", alter_sys=True)
"""


def loaded_by(args: list[str], tmp_path: Path, env: dict[str, str] | None = None
              ) -> tuple[set[str], int, subprocess.CompletedProcess[str]]:
    """Run the command line in a fresh interpreter; the modules it ended with."""
    out = tmp_path / "modules.json"
    res = subprocess.run([sys.executable, "-c", _PROBE, str(out), *args], cwd=REPO,
                         capture_output=True, text=True, timeout=120,
                         env={**_clean_env(), **(env or {})})
    data = json.loads(out.read_text(encoding="utf-8"))
    return set(data["modules"]), data["frozen"], res


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("USERMAVEN_")}


def present(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Which of `names` (packages: any submodule counts) were imported."""
    return [n for n in names if any(m == n or m.startswith(n + ".") for m in modules)]


def test_help_loads_no_sheet_reader_display_metrics_emulator_or_network_library(tmp_path):
    """`corrections --help` and `apply --help` import no sheet, display, metrics, emulator
    or network library (the sandbox command's help is read without its server stack, and
    the run stack loads when a command runs)."""
    for args in (["--help"], ["apply", "--help"]):
        modules, _, res = loaded_by(args, tmp_path)
        assert res.returncode == 0, res.stderr
        assert "sandbox" in res.stdout or args != ["--help"]
        assert present(modules, SHEET_FORMATS + OPTIONAL + TESTING) == [], args
        # `httpx._main` alone is the command line's stand-in for httpx's own CLI
        assert present(modules - {"httpx._main"}, ("aiohttp", "httpx", "sqlite3")) == [], args


def test_a_csv_apply_loads_no_parquet_excel_display_or_metrics_library(sandbox, tmp_path):
    """A CSV run against an API (stderr not a terminal, no --metrics-file) imports
    neither pyarrow nor calamine, rich nor prometheus_client, and succeeds."""
    sheet = write_csv(tmp_path / "s.csv", [{
        "event_type": "order_completed", "lookup_key": "order_id", "lookup_value": "ORD-1002",
        "event_time": "2026-09", "set.final_price": "9.00"}])
    modules, _, res = loaded_by(
        ["apply", str(sheet), "--api-url", sandbox.url, "--checkpoint",
         str(tmp_path / "cp.sqlite"), "--report", str(tmp_path / "audit.csv")],
        tmp_path, env={"USERMAVEN_TOKEN": SANDBOX_TOKEN})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "applied" in res.stdout
    assert present(modules, SHEET_FORMATS + OPTIONAL + TESTING) == []


def test_a_parquet_sheet_loads_pyarrow_only_when_read(tmp_path):
    """The probe sees what a command really loads: validating a Parquet sheet does import
    pyarrow (and still no Excel reader)."""
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"event_type": ["order_completed"], "lookup_key": ["order_id"],
                             "lookup_value": ["ORD-1"], "event_time": ["2026-09"],
                             "set.final_price": ["1"]}), path)
    modules, _, res = loaded_by(["validate", str(path)], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert present(modules, ("pyarrow",)) == ["pyarrow"]
    assert present(modules, ("python_calamine", "pandas")) == []


def test_the_metrics_file_loads_prometheus_client_when_asked(sandbox, tmp_path):
    """--metrics-file brings prometheus_client in, and the file is written."""
    sheet = write_csv(tmp_path / "s.csv", [{
        "event_type": "order_completed", "lookup_key": "order_id", "lookup_value": "ORD-1002",
        "event_time": "2026-09", "set.final_price": "8.00"}])
    prom = tmp_path / "run.prom"
    modules, _, res = loaded_by(
        ["apply", str(sheet), "--api-url", sandbox.url, "--checkpoint",
         str(tmp_path / "cp.sqlite"), "--report", str(tmp_path / "audit.csv"),
         "--metrics-file", str(prom)], tmp_path, env={"USERMAVEN_TOKEN": SANDBOX_TOKEN})
    assert res.returncode == 0, res.stdout + res.stderr
    assert present(modules, ("prometheus_client",)) == ["prometheus_client"]
    assert "corrections_exit_code 0.0" in prom.read_text(encoding="utf-8")


def test_the_command_line_freezes_its_start_up_objects(tmp_path):
    """What the imports built is frozen out of the collector (the interpreter's last
    collection at exit then skips it)."""
    _, frozen, res = loaded_by(["--version"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert frozen > 10_000


def test_httpx_command_line_still_runs_when_called(tmp_path):
    """httpx's own command line, deferred at start-up, still loads and runs when called."""
    code = ("import sys\nfrom pipeline.__main__ import _defer_httpx_cli\n_defer_httpx_cli()\n"
            "import httpx\nassert 'rich' not in sys.modules\nsys.argv = ['httpx', '--help']\n"
            "httpx.main()\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "--method" in res.stdout or "METHOD" in res.stdout


def test_importing_the_library_loads_no_client_stack_until_an_api_function_is_used():
    """`import pipeline` (and its error and dialect names) loads no HTTP, CLI or sheet
    library; the first API function brings `pipeline.api` in."""
    code = ("import json, sys\nimport pipeline\n"
            "pipeline.CorrectionsError, pipeline.Dialect, pipeline.__version__\n"
            "before = sorted(sys.modules)\npipeline.apply\n"
            "print(json.dumps([before, sorted(sys.modules)]))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    before, after = (set(m) for m in json.loads(res.stdout))
    heavy = ("aiohttp", "httpx", "click", "asyncio", "sqlite3") + SHEET_FORMATS
    assert present(before, heavy) == []
    assert "pipeline.api" not in before and "pipeline.api" in after


def test_a_run_that_retries_loads_tenacity_then_and_succeeds(sandbox, tmp_path):
    """tenacity is loaded on the first failed attempt: with 503s injected, the fresh process
    retries (and so imports it) and still applies the row."""
    sandbox.set_faults(rate_503=0.9)
    sheet = write_csv(tmp_path / "s.csv", [{
        "event_type": "order_completed", "lookup_key": "order_id", "lookup_value": "ORD-1003",
        "event_time": "2026-09", "set.final_price": "7.00"}])
    modules, _, res = loaded_by(
        ["apply", str(sheet), "--api-url", sandbox.url, "--checkpoint",
         str(tmp_path / "cp.sqlite"), "--report", str(tmp_path / "audit.csv"),
         "--max-attempts", "100", "--backoff-base", "0.001", "--backoff-max", "0.005"],
        tmp_path, env={"USERMAVEN_TOKEN": SANDBOX_TOKEN})
    assert res.returncode == 0, res.stdout + res.stderr
    retries = re.search(r"retries (\d+)", res.stdout)
    assert retries is not None and int(retries[1]) > 0, res.stdout
    assert present(modules, ("tenacity",)) == ["tenacity"]


def test_the_command_line_helpers_load_no_network_or_checkpoint_stack():
    """The modules `corrections --help` needs besides the commands themselves (output,
    summary, logs, redaction, options, mParticle's options) load no aiohttp, httpx,
    asyncio or sqlite3; those come with the job a command runs."""
    code = ("import json, sys\nimport pipeline.cli_output, pipeline.summary, pipeline.logs\n"
            "import pipeline.redact, pipeline.options, pipeline.targets.mparticle.cli_options\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    modules = set(json.loads(res.stdout))
    assert present(modules, ("aiohttp", "httpx", "asyncio", "sqlite3", "pipeline.jobs")) == []
