"""Shared command-line options as decorators, the TOML config file, and the token.

Precedence for every option: command line > environment (API options) > config file >
built-in default. The config file is `--config PATH`, or `corrections.toml` in the working
directory when present; its keys are the long option names (`concurrency = 4`,
`api-url = "..."`), optionally under a `[corrections]` table.
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pipeline.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_API_URL = "https://api.usermaven.com"
CONFIG_NAME = "corrections.toml"
#: Credentials that come from the environment only, never from a file we might log or share.
_SECRET_KEYS = frozenset({"mparticle_api_key", "mparticle_api_secret", "api_key", "api_secret",
                          "secret", "password"})


#: Where `--config` (or the implicit file) is remembered for the start-of-run announcement.
CONFIG_META = "corrections.config"


def _known_keys(ctx: click.Context) -> set[str]:
    """Every option name of every command: one config file may serve them all."""
    commands: list[click.Command] = [ctx.command]
    group = ctx.parent.command if ctx.parent is not None else None
    if isinstance(group, click.Group) and ctx.parent is not None:
        for name in group.list_commands(ctx.parent):
            cmd = group.get_command(ctx.parent, name)
            if cmd is not None:
                commands.append(cmd)
    names: set[str] = set()
    for cmd in commands:
        for p in cmd.params:
            if p.name:
                names.add(p.name)
            names.update(o.lstrip("-").replace("-", "_") for o in p.opts if o.startswith("--"))
    return names


def _refuse_open_implicit(path: Path) -> None:
    """An implicitly found config file that others can write could redirect the token."""
    mode = path.stat().st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise click.BadParameter(
            f"./{CONFIG_NAME} is writable by other users (mode {stat.S_IMODE(mode):04o}) and "
            "could point the token at another host; `chmod go-w "
            f"{CONFIG_NAME}`, or name the file explicitly with --config",
            param_hint="--config")


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    path = Path(value) if value else Path(CONFIG_NAME)
    if not value and not path.exists():
        return None
    if not value:
        _refuse_open_implicit(path)
    import tomllib  # only a run with a config file reads TOML

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise click.BadParameter(f"no config file at {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"{path} is not valid TOML: {exc}") from None
    table = data.get("corrections", data)
    if not isinstance(table, dict):
        raise click.BadParameter(f"{path}: [corrections] must be a table")
    defaults: dict[str, Any] = {}
    names = {p.name: p for p in ctx.command.params}
    known = _known_keys(ctx)
    for key, val in table.items():
        name = key.replace("-", "_")
        if name == "from":
            name = "from_"
        if name in ("token", "usermaven_token"):
            raise click.BadParameter(
                f"{path}: a token does not belong in the config file; use USERMAVEN_TOKEN or "
                "--token-file")
        if name in _SECRET_KEYS:
            raise click.BadParameter(
                f"{path}: {key} is a secret and does not belong in the config file; set "
                f"{name.upper()} in the environment")
        if name not in names:
            if name in known or name == "config":
                continue  # keys for other commands are fine in a shared file
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.7)
            hint = (f"; did you mean {close[0].rstrip('_').replace('_', '-')!r}?" if close
                    else "; keys are the long option names, e.g. concurrency = 4")
            raise click.BadParameter(f"{path}: unknown key {key!r}{hint}",
                                     param_hint="--config")
        defaults[name] = val
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    ctx.meta[CONFIG_META] = (str(path), not value)
    return str(path)


def config_in_use(ctx: click.Context) -> tuple[str, bool] | None:
    """(path, found implicitly) of the config file this command read, if any."""
    found = ctx.meta.get(CONFIG_META)
    return found if isinstance(found, tuple) else None


def config_option(f: F) -> F:
    return click.option(
        "--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
        callback=_load_config,
        help=f"TOML file of option defaults (default: ./{CONFIG_NAME} if present).",
    )(f)


def api_options(f: F) -> F:
    for opt in reversed([
        click.option("--api-url", envvar="USERMAVEN_API_URL", default=DEFAULT_API_URL,
                     show_default=True, help="API base URL (env USERMAVEN_API_URL); plain http "
                     "only to loopback."),
        click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="File holding API_KEY.SERVER_TOKEN (else env USERMAVEN_TOKEN)."),
        click.option("--sandbox", is_flag=True,
                     help="Start the embedded emulator with the sample events and run "
                     "against it."),
        click.option("--timeout", type=click.FloatRange(0.1), default=30.0, show_default=True,
                     help="Seconds per request (connect and read)."),
    ]):
        f = opt(f)
    return f


def sheet_options(f: F) -> F:
    for opt in reversed([
        click.option("--event-type", help="Event type for rows that do not say."),
        click.option("--match", metavar="ATTR",
                     help="Look events up by attribute ATTR; column ATTR holds the value."),
        click.option("--from", "from_", metavar="TIME",
                     help="Lookup window start for rows that do not say (ISO 8601)."),
        click.option("--to", metavar="TIME", help="Lookup window end (ISO 8601)."),
        click.option("--merge-mode", type=click.Choice(["merge", "replace"]), default="merge",
                     show_default=True, help="For rows that do not say."),
        click.option("--sheet-name", help="Worksheet of an .xlsx file (default: the first)."),
        click.option("--delimiter", metavar="CHAR", default=",", show_default=True,
                     help="CSV cell separator, e.g. ';' or tab."),
        click.option("--encoding", default="utf-8", show_default=True,
                     help="CSV text encoding (UTF-8 may start with a BOM), e.g. cp1252."),
        click.option("--decimal-comma", is_flag=True,
                     help="Send set.* values written like 149,90 as numbers (149.9)."),
    ]):
        f = opt(f)
    return f


def run_options(f: F) -> F:
    for opt in reversed([
        click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
                     help="Checkpoint file (default: <sheet stem>.checkpoint.sqlite beside the "
                     "sheet)."),
        click.option("--on-multiple", type=click.Choice(["fail", "newest", "all"]),
                     default="fail", show_default=True,
                     help="When a lookup finds several events."),
        click.option("--key-namespace", default="", help="Start a fresh idempotency key space."),
        click.option("--concurrency", type=click.IntRange(1, 256), default=8, show_default=True,
                     help="Requests in flight at most."),
        click.option("--rate", type=click.FloatRange(0.1), default=None,
                     help="Requests per second ceiling (default: none)."),
        click.option("--max-attempts", type=click.IntRange(1, 100), default=5,
                     show_default=True, help="Tries per request before a row is failed."),
        click.option("--max-wait", type=click.FloatRange(0), default=300.0, show_default=True,
                     help="Longest Retry-After to honour; longer ends the run cleanly."),
        click.option("--backoff-base", type=click.FloatRange(0), default=0.5, show_default=True,
                     help="Seconds: first backoff ceiling (doubles per attempt, full jitter)."),
        click.option("--backoff-max", type=click.FloatRange(0), default=30.0, show_default=True,
                     help="Seconds: cap of one backoff wait."),
        click.option("--key-ttl", type=click.FloatRange(0), default=24 * 3600.0,
                     show_default=True,
                     help="Seconds an unanswered intent's key is trusted before reconciling."),
        click.option("--retry-unresolved", is_flag=True,
                     help="Look not_found and ambiguous rows up again."),
        click.option("--shutdown-grace", type=click.FloatRange(0), default=10.0,
                     show_default=True,
                     help="Seconds in-flight requests may finish after SIGINT/SIGTERM."),
    ]):
        f = opt(f)
    return f


def output_options(f: F) -> F:
    for opt in reversed([
        click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
                     show_default=True, help="json: one object per line on stderr."),
        click.option("--quiet", "-q", is_flag=True, help="Only warnings and the exit code."),
        click.option("--verbose", "-v", is_flag=True, help="Every row's outcome on stderr."),
    ]):
        f = opt(f)
    return f


def read_token(token_file: Path | None, warn: Callable[[str], None]) -> str:
    """The token from --token-file or USERMAVEN_TOKEN; never from a plain argument."""
    if token_file is not None:
        try:
            mode = token_file.stat().st_mode
            text = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"cannot read --token-file {token_file}: {exc.strerror}") from None
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            warn(f"--token-file {token_file} is readable by other users; "
                 f"chmod 600 {token_file}")
        if not text:
            raise UsageError(f"--token-file {token_file} is empty")
        return text
    text = os.environ.get("USERMAVEN_TOKEN", "").strip()
    if not text:
        raise UsageError(
            "no token: set USERMAVEN_TOKEN=API_KEY.SERVER_TOKEN or pass --token-file PATH "
            "(or try --sandbox)")
    return text
