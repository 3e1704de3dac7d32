"""`anima reflect NAME`: deliver a reflection over the last day now, without waiting for the
agent's `[reflection] at` (the runtime, or `anima run --once`, answers it)."""

from __future__ import annotations

import click

from anima.cli.app import pass_home
from anima.home import Home


@click.command()
@click.argument("name")
@pass_home
def reflect(home: Home, name: str) -> None:
    """Ask NAME to reflect on the last day now: consolidate its memory (one turn, one commit)."""
    from anima import reflection
    from anima.status import runtime_live

    msg = reflection.deliver(home.require(), name)
    if msg is None:
        click.echo(f"{name}: a reflection was just delivered; it is pending")
        return
    span = f"{msg.extra.get('since', '?')} to {msg.extra.get('until', '?')}"
    who = "the running anima run answers it" if runtime_live(home) else (
        "no anima run is live: `anima run --once` answers it"
    )
    click.echo(f"{msg.id}: {name} reflects on {span}; {who} (one commit, see anima log {name})")
