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

    msg = reflection.deliver(home.require(), name)
    click.echo(msg.id if msg else f"{name}: a reflection was just delivered; it is pending")
