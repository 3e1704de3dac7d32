"""send and run: put messages in, run turns."""

from __future__ import annotations

import sys

import click

from anima import mailbox
from anima.agent import Agent
from anima.cli.app import console, err_console, main, pass_home
from anima.home import Home
from anima.message import Message


@main.command()
@click.argument("name")
@click.argument("text")
@click.option("--from", "sender", default="you", show_default=True, help="Sender name.")
@click.option("--conversation", default=None, help="Conversation thread (default: the channel).")
@click.option("--channel", default="cli", show_default=True, help="Channel name.")
@pass_home
def send(
    home: Home, name: str, text: str, sender: str, conversation: str | None, channel: str
) -> None:
    """Deliver a message to NAME's inbox (TEXT, or - to read standard input)."""
    agent = Agent.open(home, name)
    body = sys.stdin.read() if text == "-" else text
    if not body.strip():
        raise click.UsageError("the message is empty")
    msg = Message.create(
        sender=sender, to=name, body=body, channel=channel, conversation=conversation
    )
    mailbox.deliver(agent.path, msg)
    click.echo(msg.id)


@main.command()
@click.argument("names", nargs=-1)
@click.option("--once", is_flag=True, help="Process what is pending now and exit.")
@pass_home
def run(home: Home, names: tuple[str, ...], once: bool) -> None:
    """Run agents: with --once, answer every pending message and exit."""
    from anima.runtime import run_once

    if not once:
        raise click.UsageError("the always-on loop is not built yet; use `anima run --once`")
    failed = 0
    for r in run_once(home, list(names) or None):
        if r.error:
            failed += 1
            err_console.print(
                f"[red]{r.agent}[/red]: turn failed, messages stay pending: {r.error}"
            )
        else:
            console.print(
                f"[bold]{r.agent}[/bold] {r.commit and r.commit[:8]} "
                f"({len(r.message_ids)} message(s), {r.model}, {r.duration_ms} ms)"
            )
            if r.reply:
                console.print(r.reply.body, markup=False)
    if failed:
        sys.exit(2)
