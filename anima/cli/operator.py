"""Operator commands over the audit log: show, undo, stats, doctor."""

from __future__ import annotations

import json
import sys

import click
from rich.markup import escape

from anima.cli.app import console, pass_home, plain, tabulate
from anima.home import Home


@click.command()
@click.argument("name")
@click.argument("turn", required=False)
@pass_home
def show(home: Home, name: str, turn: str | None) -> None:
    """Show one turn of NAME: its message, trailers and diff (TURN: a sha, ~N for N turns back, default the last)."""
    from anima import audit
    from anima.agent import Agent

    click.echo(audit.show(Agent.open(home, name), turn))


@click.command()
@click.argument("name")
@click.argument("turn", required=False)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_home
def undo(home: Home, name: str, turn: str | None, yes: bool) -> None:
    """Revert a turn of NAME with git revert (default: the last one)."""
    from anima import audit
    from anima.agent import Agent

    agent = Agent.open(home, name)
    target = audit.resolve(agent, turn)
    if not yes and not click.confirm(f"Revert {target.short} “{target.subject}”?"):
        sys.exit(1)
    _, sha = audit.undo(agent, target.sha)
    console.print(f"reverted {target.short} with commit {sha[:8]}", markup=False)


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_home
def stats(home: Home, name: str, as_json: bool) -> None:
    """Turns, tokens, tool calls, errors and latency of NAME, from its commit trailers."""
    from anima import audit
    from anima.agent import Agent

    s = audit.stats(Agent.open(home, name))
    if as_json:
        click.echo(json.dumps(s.as_dict(), indent=2))
        return
    d = s.duration_ms
    console.print(
        f"{escape(name)}: {s.turns} turns, {s.tokens_in:,} tokens in / {s.tokens_out:,} out, "
        f"{s.tool_calls} tool calls"
    )
    console.print(f"turn time: p50 {d['p50']:.0f} ms, p95 {d['p95']:.0f} ms, p99 {d['p99']:.0f} ms")
    console.print(f"failing messages: {s.failing_messages}, rejected: {s.rejected}")
    for model, n in sorted(s.models.items(), key=lambda kv: -kv[1]):
        console.print(f"  {model}: {n} turns", markup=False)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_home
def doctor(home: Home, as_json: bool) -> None:
    """Check the machine, the home, providers, the runtime, units, secrets and every agent."""
    from anima.doctor import run_checks

    checks = run_checks(home)
    if as_json:
        click.echo(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        table = tabulate("", "check", "detail", "fix")
        for c in checks:
            mark = (
                "[green]ok[/green]"
                if c.ok
                else {"error": "[red]✗[/red]", "warn": "[yellow]![/yellow]"}.get(
                    c.level, "[dim]-[/dim]"
                )
            )
            table.add_row(mark, *plain(c.name, c.detail, "" if c.ok else c.fix))
        console.print(table)
    if any(not c.ok and c.level == "error" for c in checks):
        sys.exit(1)
