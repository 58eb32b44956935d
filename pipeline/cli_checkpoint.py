"""The commands that read a checkpoint back: `status`, `report` and `verify`.

Registered by `pipeline.cli`; kept apart so each file stays one sitting long.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pipeline.cli import _say
from pipeline.options import config_option, read_token

# The checkpoint and client stacks load when one of these commands runs, not when
# `corrections --help` lists them.


@click.command("status")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@config_option
def status(checkpoint: Path, as_json: bool) -> None:
    """Counts by status, the last run, and what is left to do. Offline.

    \b
    Example:
      corrections status --checkpoint fixes.checkpoint.sqlite
    """
    from pipeline.checkpoint_jobs import checkpoint_status

    info = checkpoint_status(checkpoint)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))  # json escapes controls
        return
    last = info["last_run"]
    _say(f"checkpoint: {info['checkpoint']}")
    _say(f"last run:   {last['run_id']} ({last['command']}) started {last['started_at']}, "
               f"finished {last['finished_at'] or '— (killed or running)'}, "
               f"exit {last['exit_code'] if last['exit_code'] is not None else '—'}")
    _say(f"sheet:      {last['sheet']}")
    targets = info.get("targets") or {"usermaven": info["counts"]}
    if "usermaven" in targets:
        _say("rows by status:")
        for name, n in sorted(info["counts"].items(), key=lambda kv: -kv[1]):
            _say(f"  {name:<10} {n:>8}")
        _say(f"not done:   {info['left']} row(s) not in a success state; a rerun "
                   f"retries {info['retryable']} (pending/failed), and {info['unresolved']} "
                   "more with --retry-unresolved")
    click.echo("runs (newest first; `corrections revert --run RUN_ID` undoes one):")
    for r in info["runs"]:
        click.echo(f"  {r['run_id']}  {r['command']:<6} {r['started_at'][:19]}  exit "
                   f"{'—' if r['exit_code'] is None else r['exit_code']:<3}  "
                   f"{r['applied']} mutation(s) applied")
    mparticle = targets.get("mparticle")
    if mparticle is not None:
        _say("mparticle rows by status:")
        for name, n in sorted(mparticle.items(), key=lambda kv: -kv[1]):
            _say(f"  {name:<10} {n:>8}")
        left = sum(n for s, n in mparticle.items() if s not in ("accepted", "duplicate"))
        _say(f"mparticle not done: {left} row(s); a rerun resends pending and failed "
                   "batches byte for byte (mParticle drops what it already has)")


@click.command("report")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, metavar="PATH|s3://…",
              help="Report path; format by suffix: .csv, .parquet, .jsonl.")
@config_option
def report(checkpoint: Path, out: str) -> None:
    """Write the audit report again from a checkpoint. Offline.

    \b
    Example:
      corrections report --checkpoint fixes.checkpoint.sqlite --out fixes.audit.parquet
    """
    from pipeline.checkpoint_jobs import reemit_report

    n = reemit_report(checkpoint, out)
    _say(f"wrote {n} lines to {out}", err=True)




@click.command("verify")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--wait", type=click.FloatRange(0), default=30.0, show_default=True,
              help="Seconds to keep looking while mutations propagate.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="Rewrite this report with the verdicts (default: none).")
@click.option("--api-url", envvar="USERMAVEN_API_URL", default="https://api.usermaven.com",
              show_default=True, help="API base URL (env USERMAVEN_API_URL).")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding API_KEY.SERVER_TOKEN (else env USERMAVEN_TOKEN).")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--timeout", type=click.FloatRange(0.1), default=30.0, show_default=True)
@click.option("--sandbox", is_flag=True, hidden=True)
@config_option
def verify_command(checkpoint: Path, wait: float, report: Path | None, api_url: str,
                   token_file: Path | None, concurrency: int, timeout: float,
                   sandbox: bool) -> None:
    """Look applied events up again and confirm the new values are visible.

    Records `verified` or `mismatch` per event in the checkpoint (see `corrections report`);
    events not visible within --wait stay `applied` with a note. Exit 0 when every
    checkable event is verified, 1 otherwise.

    \b
    Example:
      corrections verify --checkpoint fixes.checkpoint.sqlite --wait 60
    """
    from pipeline.checkpoint_jobs import reemit_report
    from pipeline.jobs import Target
    from pipeline.targets import PRIMARY, get
    from pipeline.wire import check_api_url, check_token

    if sandbox:
        raise click.UsageError(
            "verify cannot use --sandbox: the emulator that `apply --sandbox` starts forgets its "
            "changes when that command ends. Run `corrections sandbox` in another terminal, "
            "apply and verify with --api-url http://127.0.0.1:8787 and "
            "USERMAVEN_TOKEN=sandbox-key.sandbox-server-token")

    token = check_token(read_token(token_file, lambda m: _say(
        f"corrections: warning: {m}", err=True)))
    out = get(PRIMARY).read_back(checkpoint, Target(check_api_url(api_url), token), wait=wait,
                                 concurrency=concurrency, timeout=timeout)
    for line in out.details[:50]:
        _say(f"  {line}")
    _say(f"verified {out.verified} · mismatch {out.mismatch} · not visible {out.pending} · "
               f"cannot verify {out.unverifiable} · {out.requests} lookups")
    if report is not None:
        n = reemit_report(checkpoint, report)
        _say(f"report: {report} ({n} lines)")
    sys.exit(out.exit_code)
