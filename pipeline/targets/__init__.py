"""The delivery targets this release ships, behind the one protocol of `pipeline.target`.

A run may deliver one correction sheet to several targets; each (row, target) has its own
status, so resuming one target never resends to another. The core asks this registry (by the
names a user gives `--target`), never a target's own modules; a new target is one more entry
here and a package beside `usermaven` and `mparticle`.

The first target is the *primary* one: it finds each event (Usermaven's lookup) and the
others deliver after it, from what it found.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pipeline.target import Target

USERMAVEN = "usermaven"
MPARTICLE = "mparticle"
#: name → the module whose `TARGET` implements it, in delivery order
_MODULES = {USERMAVEN: "pipeline.targets.usermaven", MPARTICLE: "pipeline.targets.mparticle.target"}
TARGETS = tuple(_MODULES)
PRIMARY = TARGETS[0]
#: where each extra target's hooks live: its command-line options, its offline row check,
#: and its sheet columns (light modules: `validate` and `--help` import them, not the sender)
_HOOKS = {MPARTICLE: {"cli": "pipeline.targets.mparticle.cli_options",
                      "rows": "pipeline.targets.mparticle.mapping",
                      "columns": "pipeline.targets.mparticle.limits"}}

F = TypeVar("F", bound=Callable[..., Any])


@cache
def get(name: str) -> Target:
    """The target called `name` (imported on first use)."""
    return import_module(_MODULES[name]).TARGET  # type: ignore[no-any-return]


def in_order(names: Sequence[str]) -> tuple[str, ...]:
    """The chosen targets in delivery order (the primary first)."""
    return tuple(t for t in TARGETS if t in names)


def primary_only(names: Sequence[str]) -> bool:
    """The primary target alone: the report keeps its classic layout (no `target` column)."""
    return tuple(names) == (PRIMARY,)


def chosen(kw: dict[str, Any]) -> tuple[str, ...]:
    """The targets a command's options ask for (`--target`, repeatable; the primary by
    default)."""
    return in_order(kw.get("target") or (PRIMARY,))


def target_options(f: F) -> F:
    """`--target`, then every extra target's offline options, on a command."""
    import click

    for name in reversed(_HOOKS):
        f = _cli(name).offline_options(f)
    others = " ".join(f"--target {t}" for t in TARGETS)
    return click.option(  # type: ignore[no-any-return]
        "--target", "target", type=click.Choice(TARGETS), multiple=True, default=(PRIMARY,),
        show_default=True, help=f"Where corrections go; repeat for several ({others}).")(f)


def api_options(f: F) -> F:
    """Where every extra target's API is (options of commands that send)."""
    for name in reversed(_HOOKS):
        f = _cli(name).api_options(f)
    return f


def setups(kw: dict[str, Any], *, sandbox_url: str | None, need_credentials: bool
           ) -> dict[str, Any]:
    """Each chosen extra target's setup (its API, credentials and options) from the
    command's options; with `sandbox_url`, the embedded sandbox's."""
    out: dict[str, Any] = {}
    for name in chosen(kw):
        if name == PRIMARY:
            continue
        cli = _cli(name)
        out[name] = (cli.sandbox_setup(sandbox_url, kw) if sandbox_url is not None
                     else cli.remote_setup(kw, need_credentials=need_credentials))
    return out


def offline_options(kw: dict[str, Any]) -> dict[str, Any]:
    """Each chosen extra target's offline options (for `validate`)."""
    return {n: _cli(n).options_from(kw) for n in chosen(kw) if n != PRIMARY}


def offline_problem(name: str, item: Any, options: Any, *, primary: bool) -> Any:
    """What target `name` cannot take in a valid row (a `Problem` with column and message),
    found offline; None when it can take it."""
    return _hook(name, "rows").offline_problem(item, options, usermaven=primary)


def user_columns() -> tuple[str, tuple[str, ...], str]:
    """The sheet's user columns: (identity prefix, identity kinds, user id column), from the
    target that delivers corrections as data for a user."""
    m = next(m for m in (_hook(n, "columns") for n in _HOOKS) if hasattr(m, "IDENTITY_PREFIX"))
    return m.IDENTITY_PREFIX, tuple(m.IDENTITY_KEYS), m.MPID_COLUMN


def report_columns() -> tuple[str, ...]:
    """The report columns the targets add after the common ones (their own ids)."""
    return tuple(col for name in _HOOKS
                 for col in _hook(name, "columns").REPORT_COLUMNS)


def _hook(name: str, kind: str) -> Any:
    return import_module(_HOOKS[name][kind])


def _cli(name: str) -> Any:
    return _hook(name, "cli")
