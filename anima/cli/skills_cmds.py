"""`anima skills list|show|check`: the Agent Skills an agent has, shared or its own, and why
any of them is skipped."""

from __future__ import annotations

import sys

import click

from anima.cli.app import AnimaGroup, console, pass_home, plain, tabulate
from anima.home import Home
from anima.skills import Skill


@click.group(cls=AnimaGroup)
def skills() -> None:
    """Agent Skills: folders with a SKILL.md in an agent's skills/ or $ANIMA_HOME/skills/."""


def _everywhere(home: Home, agent: str | None) -> list[Skill]:
    """One agent's skills and the shared ones; without an agent, every agent's and the shared."""
    from anima.agent import Agent
    from anima.skills import discover

    if agent is not None:
        Agent.open(home, agent)  # AgentNotFound with the list of agents
        return discover(home, agent)
    found = [s for name in home.agent_names() for s in discover(home, name) if s.scope == "agent"]
    return found + discover(home, None)


def _origin(skill: Skill) -> str:
    return "shared" if skill.scope == "shared" else f"agent {skill.folder.parent.parent.name}"


def _state(skill: Skill) -> str:
    if skill.problem:
        return f"no: {skill.problem}"
    return "shadowed by the agent's own" if skill.shadowed else "yes"


@skills.command("list")
@click.argument("agent", required=False)
@pass_home
def list_(home: Home, agent: str | None) -> None:
    """List the skills of AGENT and the shared ones (without AGENT: every agent's)."""
    found = _everywhere(home, agent)
    if not found:
        console.print(f"no skills (put one in {home.root / 'skills'}/NAME/SKILL.md)")
        return
    table = tabulate("name", "from", "description", "valid")
    for s in found:
        table.add_row(*plain(s.name, _origin(s), s.description, _state(s)))
    console.print(table)


@skills.command()
@click.argument("name")
@click.option("--agent", help="An agent whose own skills come first (default: shared only).")
@pass_home
def show(home: Home, name: str, agent: str | None) -> None:
    """Print skill NAME as the skill tool gives it to the agent: body, files, how to run."""
    from anima.agent import Agent
    from anima.skills import ShellMode, find, load, shell_mode

    shell: ShellMode = "sandboxed"  # as an agent allowed to run scripts sees it
    if agent is not None:
        shell = shell_mode(Agent.open(home, agent).config)
    skill = find(home, agent, name)
    f = skill.fields
    extra = [("license", f.license), ("compatibility", f.compatibility)]
    extra += [("allowed-tools", " ".join(f.allowed_tools))]
    extra += [(f"metadata.{k}", v) for k, v in f.metadata]
    for key, value in extra:
        if value:
            click.echo(f"{key}: {value}")
    click.echo(load(skill, shell=shell))


@skills.command()
@click.argument("name", required=False)
@click.option("--agent", help="Check this agent's skills and the shared ones only.")
@pass_home
def check(home: Home, name: str | None, agent: str | None) -> None:
    """Check skills (or skill NAME) against the Agent Skills rules; exit 1 if any is invalid."""
    found = [s for s in _everywhere(home, agent) if name is None or s.name == name]
    if name is not None and not found:
        from anima.errors import BadSkill

        raise BadSkill(f"no skill named {name!r}")
    for s in found:
        where = f"{s.name} ({_origin(s)}, {s.folder})"
        if s.problem:
            console.print("[red]invalid[/red]", *plain(f"{where}: {s.problem}"))
        else:
            console.print(
                "[green]ok[/green]",
                *plain(where + (": shadowed by the agent's own" if s.shadowed else "")),
            )
    bad = sum(1 for s in found if s.problem)
    console.print(f"{len(found)} checked, {bad} invalid")
    if bad:
        sys.exit(1)
