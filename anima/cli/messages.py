"""send and tick for click: their options and help. What they do, and how a plain command line
runs them without click, is in anima.cli.short."""

from __future__ import annotations

import sys

import click

from anima.cli import short
from anima.cli.app import pass_home
from anima.home import Home


@click.command()
@click.argument("name")
@click.argument("text")
@click.option("--from", "sender", default="you", show_default=True, help="Sender name.")
@click.option("--conversation", default=None, help="Conversation thread (default: the channel).")
@click.option("--channel", default="cli", show_default=True, help="Channel name.")
@pass_home
def send(
    home: Home, name: str, text: str, sender: str, conversation: str | None, channel: str
) -> None:
    """Deliver a message to NAME's inbox (TEXT, or - to read standard input). NAME@PEER: an
    agent of another home, over the peer's connection (from you@this-host)."""
    body = sys.stdin.read() if text == "-" else text
    if not body.strip():
        raise click.UsageError("the message is empty")
    if "@" in name:
        from anima import peer

        click.echo(peer.send(home.require(), name, body, conversation=conversation))
        return
    agent_dir = home.agent_dir(name)  # AgentNotFound with the list of agents
    click.echo(
        short.send(agent_dir, name, body, sender=sender, conversation=conversation, channel=channel)
    )


@click.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Deliver even outside the agent's active hours.")
@pass_home
def tick(home: Home, name: str, force: bool) -> None:
    """Deliver a heartbeat to NAME (run by the anima-tick@ timer or cron; starts fast)."""
    click.echo(short.tick(home, name, force=force))
