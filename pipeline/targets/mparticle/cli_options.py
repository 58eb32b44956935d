"""Command-line options of the mParticle target: how corrections are shaped, where it is.

Every option is also a config-file key (`target = ["usermaven", "mparticle"]`,
`mparticle-pod = "EU1"`, …). The mParticle key and secret come from the environment only
(`MPARTICLE_API_KEY`, `MPARTICLE_API_SECRET`): never an argument, never the config file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pipeline.targets.mparticle.limits import ENVIRONMENTS, PODS
from pipeline.targets.mparticle.mapping import DEFAULT_EVENT_NAME, MODES, MParticleOptions

if TYPE_CHECKING:  # the delivery stack loads when mParticle is targeted, not for --help
    from pipeline.targets.mparticle.deliver import MParticleSetup

F = TypeVar("F", bound=Callable[..., Any])


def offline_options(f: F) -> F:
    """How a correction is shaped for mParticle (options `validate` needs too)."""
    for opt in reversed([
        click.option("--mparticle-as", "mparticle_as", type=click.Choice(MODES),
                     default="event", show_default=True,
                     help="event: one custom_event per correction; user-attributes: the "
                     "corrected attributes as user attributes."),
        click.option("--mparticle-event-name", default=DEFAULT_EVENT_NAME, show_default=True,
                     help="event_name of the custom events."),
        click.option("--mparticle-environment", type=click.Choice(ENVIRONMENTS),
                     default="production", show_default=True,
                     help="The batches' environment."),
    ]):
        f = opt(f)
    return f


def api_options(f: F) -> F:
    """Where the mParticle Events API is."""
    for opt in reversed([
        click.option("--mparticle-pod", type=click.Choice(list(PODS), case_sensitive=False),
                     default="US1", show_default=True,
                     help="mParticle pod (data region) of the input."),
        click.option("--mparticle-url", envvar="MPARTICLE_API_URL", metavar="URL",
                     help="Events API base URL instead of a pod (env MPARTICLE_API_URL); plain "
                     "http only to loopback."),
    ]):
        f = opt(f)
    return f


def options_from(kw: dict[str, Any]) -> MParticleOptions:
    try:
        return MParticleOptions(mode=kw.get("mparticle_as") or "event",
                                event_name=kw.get("mparticle_event_name") or DEFAULT_EVENT_NAME,
                                environment=kw.get("mparticle_environment") or "production")
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def remote_setup(kw: dict[str, Any], *, need_credentials: bool = True) -> MParticleSetup:
    """The real Events API: pod or URL, credentials from the environment."""
    from pipeline.targets.mparticle.client import (
        KEY_ENV,
        SECRET_ENV,
        MParticleTarget,
        base_url,
        check_credentials,
    )
    from pipeline.targets.mparticle.deliver import MParticleSetup

    url = base_url(kw.get("mparticle_pod"), kw.get("mparticle_url"))
    key = os.environ.get(KEY_ENV, "")
    secret = os.environ.get(SECRET_ENV, "")
    if need_credentials or (key and secret):
        key, secret = check_credentials(key, secret)
    return MParticleSetup(MParticleTarget(url, key, secret, url), options_from(kw))


def sandbox_setup(url: str, kw: dict[str, Any]) -> MParticleSetup:
    from pipeline.sandbox.mparticle import SANDBOX_MP_KEY, SANDBOX_MP_SECRET
    from pipeline.targets.mparticle.client import MParticleTarget
    from pipeline.targets.mparticle.deliver import MParticleSetup

    return MParticleSetup(MParticleTarget(url, SANDBOX_MP_KEY, SANDBOX_MP_SECRET, "sandbox"),
                          options_from(kw))
