"""The command line of reviewed plans: `apply --plan`, `plan --out`'s output, `revert`.

Kept beside `pipeline.cli` (which registers these) so each file stays one sitting long; the
work itself is in `pipeline.plan_jobs`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

import pipeline.cli as cli
from pipeline.cli_output import finish_run, row_logger, setup_output
from pipeline.errors import UsageError
from pipeline.metrics import RunMetrics
from pipeline.progress import RunProgress
from pipeline.targets import PRIMARY, chosen

# The plan machinery (plan_jobs, planfile, planning, revert) is loaded by the commands that
# use it: `corrections apply SHEET` registers `revert` without paying for it.


def apply_plan(sheet: str | None, kw: dict[str, Any]) -> None:
    """`apply --plan PLAN`: carry out a saved plan exactly; exits with the run's code."""
    from pipeline.jobs import apply_sheet
    from pipeline.plan_jobs import (
        default_plan_checkpoint,
        default_plan_report,
        load_plan,
        plan_targets,
        setups_for_plan,
    )
    from pipeline.planfile import read_plan

    if sheet is not None:
        raise UsageError("give either a SHEET or --plan PLAN, not both")
    if kw["plan"] is None:
        raise UsageError("give the SHEET to apply, or --plan PLAN (a plan written by "
                         "`corrections plan SHEET --out PLAN`)")
    setup_output(kw)
    path = Path(kw["plan"])
    plan = read_plan(path, kw["expect_digest"])
    # the plan decides where it goes: every target it was reviewed for, no other
    targets = plan_targets(plan)
    asked = chosen(kw)
    if set(asked) != set(targets) and asked != (PRIMARY,):
        raise UsageError(f"{path} was reviewed for {' and '.join(targets)}; drop --target "
                         "(a plan is applied to exactly the targets it covers)")
    kw = {**kw, "target": targets}
    checkpoint = kw["checkpoint"] or default_plan_checkpoint(path)
    report = kw["report"] or str(default_plan_report(path))
    with cli._target(kw["api_url"], kw["token_file"], kw["sandbox"], kw) as (target, extra):
        assert target is not None
        job = load_plan(path, target, refresh=not kw["no_refresh"], plan=plan)
        extra = setups_for_plan(plan, extra)
        click.echo(f"plan {plan.digest}: {len(plan.items)} item(s) for "
                   f"{' and '.join(targets)}, "
                   f"{'no refresh' if kw['no_refresh'] else 'each event read again first'}",
                   err=True)
        progress = RunProgress.for_terminal(len(plan.items), quiet=kw["quiet"])
        outcome = apply_sheet(job, target, cli._run_options(kw), checkpoint=checkpoint,
                              report=report, progress=progress, extra=extra,
                              on_row=row_logger(kw["verbose"], kw["log_format"] == "json"))
    metrics_file = kw.get("metrics_file")
    finish_run(outcome, str(path), kw, RunMetrics(metrics_file) if metrics_file else None)
    sys.exit(outcome.exit_code)


def echo_saved(out: Path, saved: dict[str, Any]) -> None:
    """What `plan --out` prints: the digest to approve, and what the plan holds."""
    click.echo(f"plan {saved['digest']}")
    note = (f"; {saved['unchecked']} by event_id, not checked (no lookup)"
            if saved["unchecked"] else "")
    click.echo(f"wrote {out}: {saved['items']} item(s) to send, {saved['skipped']} row(s) or "
               f"event(s) left alone{note}. Apply exactly this with: corrections apply --plan "
               f"{out} --expect-digest {saved['digest']}", err=True)


@click.command("revert")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The checkpoint of the run(s) to undo.")
@click.option("--run", "runs", multiple=True, metavar="RUN_ID",
              help="A run to undo (repeatable); `corrections status` shows run ids.")
@click.option("--all", "all_runs", is_flag=True, help="Undo every run of the checkpoint.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="The plan file to write (default beside the checkpoint, .plan.json).")
@click.option("--force", is_flag=True,
              help="No guard: restore events even if they changed after the run.")
def revert_command(checkpoint: Path, runs: tuple[str, ...], all_runs: bool, out: Path | None,
                   force: bool) -> None:
    """Write the plan that returns every event a run changed to its state before that run.

    Each item replaces the event's attributes with those seen before the run, guarded by the
    state the run left: an event changed since is `drifted` when the plan is applied, and
    left alone (unless --force). Events never looked up (event_id rows) are listed as
    cannot_revert. Nothing is sent: review the plan, then apply it with `apply --plan`.

    \b
    Example:
      corrections revert --checkpoint fixes.checkpoint.sqlite --run run-20261123T030000Z-ab12cd
      corrections apply --plan fixes.revert-run-20261123T030000Z-ab12cd.plan.json
    """
    from pipeline.plan_jobs import write_revert
    from pipeline.revert import CANNOT_REVERT

    if bool(runs) == all_runs:
        raise UsageError("name the run(s) to undo with --run RUN_ID, or give --all")
    done = write_revert(checkpoint, None if all_runs else list(runs), out=out, force=force)
    plan = done.plan
    for item in plan.items[:50]:
        click.echo(f"  restore {item.event_id} ({item.event_type or 'event'}): "
                   f"{len(item.attributes_after)} attribute(s) as before the run")
    for s in plan.skipped:
        click.echo(f"  {CANNOT_REVERT} {s.event_id}: {s.reason}")
    click.echo(f"plan {done.digest}")
    click.echo(f"wrote {done.out}: {len(plan.items)} event(s) to restore, "
               f"{len(plan.skipped)} cannot be reverted"
               f"{' (no guards: --force)' if force else ''}. Apply it with: corrections apply "
               f"--plan {done.out} --expect-digest {done.digest}", err=True)
