"""`anima proposals list|show|approve|reject|revert NAME [ID]`: a person decides what an agent
proposed to change about itself (anima/proposals.py)."""

from __future__ import annotations

import click

from anima.cli.app import AnimaGroup, console, pass_home, plain, tabulate
from anima.home import Home


@click.group(cls=AnimaGroup)
def proposals() -> None:
    """Changes an agent proposed to itself (persona, always.md, skills, agent.toml keys)."""


def _approver() -> str:
    import getpass

    try:
        return f"{getpass.getuser()} (anima proposals approve)"
    except Exception:  # no user name in a container: still say where it came from
        return "anima proposals approve"


@proposals.command("list")
@click.argument("name")
@pass_home
def list_(home: Home, name: str) -> None:
    """List NAME's proposals, newest first, with their state and checks."""
    from anima import proposals as model
    from anima.agent import Agent

    found = model.proposals(Agent.open(home, name))
    if not found:
        console.print(f"{name} has no proposals", markup=False)
        return
    table = tabulate("id", "state", "checks", "files", "reason")
    for p in found:
        checks = "passed" if p.passed else "FAILED"
        table.add_row(*plain(p.id, p.state, checks, ", ".join(p.files), p.reason[:80]))
    console.print(table)


@proposals.command()
@click.argument("name")
@click.argument("pid", metavar="[ID]", required=False)
@pass_home
def show(home: Home, name: str, pid: str | None) -> None:
    """Show a proposal of NAME (default: the newest open one): reason, checks and diff."""
    from anima import proposals as model
    from anima.agent import Agent

    agent = Agent.open(home, name)
    p = model.latest(agent, pid)
    click.echo(f"proposal {p.id} ({p.state}); checks when proposed: "
               f"{'passed' if p.passed else 'FAILED'}")
    for problem in p.problems:
        click.echo(f"  - {problem}")
    if p.state == "open":  # approval runs them again, on the agent as it is by then
        now = model.checks_now(agent, p.id)
        click.echo(f"checks now (as approval would run them): {'FAILED' if now else 'passed'}")
        for problem in now:
            click.echo(f"  - {problem}")
    click.echo(model.diff(agent, p.id))


@proposals.command()
@click.argument("name")
@click.argument("pid", metavar="ID")
@click.option("--force", is_flag=True, help="Approve even though its checks fail.")
@pass_home
def approve(home: Home, name: str, pid: str, force: bool) -> None:
    """Apply proposal ID of NAME to its main branch as one commit."""
    from anima import proposals as model
    from anima.agent import Agent

    sha = model.approve(Agent.open(home, name), pid, by=_approver(), force=force)
    console.print(f"approved {pid}: applied as commit {sha[:8]}", markup=False)


@proposals.command()
@click.argument("name")
@click.argument("pid", metavar="ID")
@click.option("--why", default="", help="Why, kept with the record.")
@pass_home
def reject(home: Home, name: str, pid: str, why: str) -> None:
    """Reject proposal ID of NAME: its branch goes, a record stays."""
    from anima import proposals as model
    from anima.agent import Agent

    model.reject(Agent.open(home, name), pid, by=_approver(), why=why)
    console.print(f"rejected {pid}", markup=False)


@proposals.command()
@click.argument("name")
@click.argument("pid", metavar="ID")
@click.option("--why", default="reverted by hand", help="Why, written into the commit.")
@pass_home
def revert(home: Home, name: str, pid: str, why: str) -> None:
    """Undo an approved proposal ID of NAME with a commit saying why."""
    from anima import proposals as model
    from anima.agent import Agent

    sha = model.revert(Agent.open(home, name), pid, why=why)
    console.print(f"reverted {pid} with commit {sha[:8]}", markup=False)
