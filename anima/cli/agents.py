"""init, new, agents, log: the home and its agents."""

from __future__ import annotations

import json

import click

from anima.cli.app import console, main, pass_home
from anima.home import Home


@main.command()
@pass_home
def init(home: Home) -> None:
    """Create the Anima home (anima.toml, always.md, agents/)."""
    created = home.init()
    console.print(f"{'created' if created else 'already there'}: {home.root}")


@main.command()
@click.argument("name")
@pass_home
def new(home: Home, name: str) -> None:
    """Create agent NAME from the template, as a new git repository."""
    from anima.agent import create_agent

    home.init()
    agent = create_agent(home, name)
    console.print(f"created agent [bold]{name}[/bold] at {agent.path}")
    console.print(f"edit {agent.path / 'persona.md'} to say who {name} is")


@main.command("agents")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_home
def agents_cmd(home: Home, as_json: bool) -> None:
    """List agents: provider/model, pending messages, last turn, heartbeat."""
    from rich.table import Table

    from anima import status
    from anima.agent import Agent

    home.require()
    rows = []
    for name in home.agent_names():
        cfg = Agent(home, name).config
        st = status.agent_status(home, name)
        rows.append(
            {
                "name": name,
                "provider": cfg.provider,
                "model": cfg.model or "default",
                "pending": st["pending"],
                "last_turn": st["last_turn"],
                "heartbeat": cfg.heartbeat.every or None,
                "next_heartbeat": st["next_heartbeat"],
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("name", "provider/model", "pending", "last turn", "heartbeat")
    for r in rows:
        last = r["last_turn"]
        table.add_row(
            r["name"],
            f"{r['provider']}/{r['model']}",
            str(r["pending"]),
            f"{last['at']} {last['commit']}" if last else "-",
            r["heartbeat"] or "-",
        )
    console.print(table)


@main.command("log")
@click.argument("name")
@click.option("-n", "limit", default=20, show_default=True, help="How many commits.")
@click.option("--grep", default=None, help="Only commits whose message matches.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_home
def log_cmd(home: Home, name: str, limit: int, grep: str | None, as_json: bool) -> None:
    """Show NAME's turns (its git log) with their trailers."""
    from anima import gitstore
    from anima.agent import Agent

    agent = Agent.open(home, name)
    entries = gitstore.log(agent.path, limit=limit, grep=grep)
    if as_json:
        click.echo(json.dumps([e.__dict__ for e in entries], indent=2))
        return
    for e in entries:
        t = e.trailers
        console.print(f"[yellow]{e.short}[/yellow] [dim]{e.date}[/dim] {e.subject}")
        if "Anima-Model" in t:
            console.print(
                f"         [dim]{t.get('Anima-Model')} · {t.get('Anima-Tokens-In')}→"
                f"{t.get('Anima-Tokens-Out')} tokens · {t.get('Anima-Tool-Calls')} tool calls · "
                f"{t.get('Anima-Duration-Ms')} ms · {t.get('Anima-Message')}[/dim]"
            )
