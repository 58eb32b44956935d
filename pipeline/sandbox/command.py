"""`corrections sandbox` / `python -m pipeline.sandbox`: serve the emulator in the foreground.

The server stack loads when the command runs, not when `corrections --help` lists it.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import click

from pipeline.sandbox import SANDBOX_TOKEN
from pipeline.sandbox.faults import FaultPlan

_rate = click.FloatRange(0.0, 1.0)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Loopback address to bind (anything else is refused).")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535),
              help="Port; 0 picks a free one (read it from the first output line).")
@click.option("--events", "events_path", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), default=None, show_default="the sample events",
              help="Events to serve: CSV or Parquet with event_id, event_type, _timestamp, "
                   "_is_deleted, event_attributes.")
@click.option("--used-keys", "used_keys_path", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), default=None,
              help="CSV idempotency_key,event_id of keys already used "
                   "[default: sample_data/used_keys.csv when serving the sample events].")
@click.option("--token", "tokens", multiple=True,
              help=f"Extra accepted token (API_KEY.SERVER_TOKEN); {SANDBOX_TOKEN} always works.")
@click.option("--propagation-delay", type=click.FloatRange(0.0), default=0.0, show_default=True,
              help="Seconds before a mutation is visible to lookups.")
@click.option("--seed", type=int, default=0, show_default=True, help="Fault injection seed.")
@click.option("--latency-ms", type=click.FloatRange(0.0), default=0.0, show_default=True)
@click.option("--latency-jitter-ms", type=click.FloatRange(0.0), default=0.0, show_default=True)
@click.option("--rate-429", type=_rate, default=0.0, show_default=True)
@click.option("--retry-after", type=click.IntRange(0), default=1, show_default=True,
              help="Retry-After seconds sent with a 429.")
@click.option("--rate-500", type=_rate, default=0.0, show_default=True)
@click.option("--rate-503", type=_rate, default=0.0, show_default=True)
@click.option("--rate-cut", type=_rate, default=0.0, show_default=True,
              help="Drop the connection before processing (nothing applied).")
@click.option("--rate-apply-then-cut", type=_rate, default=0.0, show_default=True,
              help="Commit the mutation, then drop the connection without answering.")
def sandbox_command(host: str, port: int, events_path: Path | None,
                    used_keys_path: Path | None,
                    tokens: tuple[str, ...], propagation_delay: float, seed: int,
                    latency_ms: float, latency_jitter_ms: float, rate_429: float,
                    retry_after: int, rate_500: float, rate_503: float, rate_cut: float,
                    rate_apply_then_cut: float) -> None:
    """Serve a local Usermaven Event mutations API emulator on loopback.

    Implements POST /v1/event-mutation/lookup and POST /v1/event-mutation as documented,
    with seeded, reproducible fault injection. Prints one line
    `sandbox listening on http://127.0.0.1:PORT`; stops on Ctrl-C / SIGTERM.
    Controls (no auth): GET /_sandbox/stats, GET /_sandbox/events/ID,
    GET|POST /_sandbox/faults, POST /_sandbox/reset, POST /_sandbox/forget-keys.

    \b
    Example:
      corrections sandbox --port 8787 --seed 7 --rate-429 0.05 --rate-apply-then-cut 0.02
      USERMAVEN_TOKEN=sandbox-key.sandbox-server-token \\
        corrections apply --api-url http://127.0.0.1:8787 sheet.csv
    """
    if not _is_loopback(host):
        raise click.BadParameter(f"{host!r} is not a loopback address", param_hint="--host")
    try:
        plan = FaultPlan(seed=seed, latency_ms=latency_ms, latency_jitter_ms=latency_jitter_ms,
                         rate_429=rate_429, retry_after=retry_after, rate_500=rate_500,
                         rate_503=rate_503, rate_cut=rate_cut,
                         rate_apply_then_cut=rate_apply_then_cut)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    from pipeline.sandbox.sample import sample_files
    from pipeline.sandbox.server import run_forever
    from pipeline.sandbox.store import EventStore

    try:
        with sample_files() as (sample_events, sample_keys):
            if events_path is None or events_path.resolve() == sample_events.resolve():
                events_path = sample_events
                used_keys_path = used_keys_path or sample_keys
            store = EventStore.from_files(events_path, used_keys_path,
                                          propagation_delay=propagation_delay)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot load events: {exc}") from None
    try:
        run_forever(host, port, store, plan, {SANDBOX_TOKEN, *tokens})
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None
