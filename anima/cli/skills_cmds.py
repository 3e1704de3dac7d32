"""`anima skills list|show|check`: the Agent Skills an agent has, shared or its own, and why
any of them is skipped."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from anima.cli.app import AnimaGroup, console, pass_home, plain, tabulate
from anima.home import Home
from anima.skills import Skill

if TYPE_CHECKING:
    from anima.skill_install import Candidate as SkillCandidate


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
    for s in found:
        if note := _scripts_note(home, s, agent):
            console.print("[yellow]note[/yellow]", *plain(f"{s.name} ({_origin(s)}): {note}"))


def _scripts_note(home: Home, skill: Skill, agent: str | None) -> str | None:
    from anima.skills import scripts_note

    return scripts_note(home, skill, agent) if skill.usable else None


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
            note = "shadowed by the agent's own" if s.shadowed else _scripts_note(home, s, agent)
            console.print("[green]ok[/green]", *plain(where + (f": {note}" if note else "")))
    bad = sum(1 for s in found if s.problem)
    console.print(f"{len(found)} checked, {bad} invalid")
    if bad:
        sys.exit(1)


def _show(candidate: SkillCandidate) -> None:
    """What a skill holds (scripts marked) or, for an update, what changes."""
    from rich.text import Text

    pin = candidate.pin
    where = f"agent {candidate.agent}" if candidate.agent else "shared"
    source = f"{pin.url}, ref {pin.ref or 'HEAD'}, commit {pin.commit[:12]}"
    console.print(Text(f"skill {pin.name} ({where}) from {source}", style="bold"))
    if candidate.previous is not None:
        console.print(Text(f"was commit {candidate.previous.commit[:12]}", style="dim"))
        console.print(Text(candidate.stat.rstrip() or "(no files changed)"))
        if candidate.skill_md_diff.strip():
            console.print(Text(candidate.skill_md_diff.rstrip()))
    else:
        for f in candidate.files:
            mark = "  [script]" if f.script else ""
            console.print(Text(f"  {f.path} ({f.size} bytes){mark}"))
    if candidate.new_scripts:
        console.print(Text(f"scripts: {', '.join(candidate.new_scripts)}", style="yellow"))


def _consent(candidate: SkillCandidate, yes: bool) -> bool:
    """--yes, or on a terminal a question; otherwise install() refuses with how to consent."""
    if yes or not candidate.new_scripts or not sys.stdin.isatty():
        return yes
    return click.confirm(f"Install skill {candidate.name} with its scripts?", default=False)


@skills.command()
@click.argument("spec", metavar="GIT_URL[#REF][:PATH]")
@click.option("--agent", help="Install into this agent's skills/ (committed), not the shared.")
@click.option("--yes", is_flag=True, help="Install a skill that carries scripts.")
@pass_home
def add(home: Home, spec: str, agent: str | None, yes: bool) -> None:
    """Install the skill at GIT_URL (or a marketplace name), pinned to its commit in
    skills.lock; shows its files first, and a skill with scripts needs --yes."""
    from anima.skill_install import fetch_new, install, shell_warning

    with fetch_new(home, spec, agent) as candidate:
        _show(candidate)
        install(home, candidate, consent=_consent(candidate, yes))
    console.print(f"installed {candidate.name} at {candidate.target} ({candidate.pin.commit[:12]})")
    if warning := shell_warning(home, candidate):
        console.print("[yellow]warning:[/yellow]", *plain(warning))


@skills.command()
@click.argument("names", nargs=-1)
@click.option("--agent", help="Update this agent's skills (committed), not the shared ones.")
@click.option("--yes", is_flag=True, help="Accept updates that add or change scripts.")
@pass_home
def update(home: Home, names: tuple[str, ...], agent: str | None, yes: bool) -> None:
    """Move skills installed from git (or those NAMES) to their ref's newest commit, showing
    what changes; an update that adds or changes scripts needs --yes."""
    from anima.skill_install import fetch_updates, install

    with fetch_updates(home, names, agent) as candidates:
        if not candidates:
            console.print("no skills installed from git here (anima skills add GIT_URL)")
        for candidate in candidates:
            if not candidate.changed:
                if candidate.previous and candidate.previous.commit != candidate.pin.commit:
                    install(home, candidate, consent=False)  # the pin moves; no file changes
                console.print(f"{candidate.name}: up to date ({candidate.pin.commit[:12]})")
                continue
            _show(candidate)
            install(home, candidate, consent=_consent(candidate, yes))
            console.print(f"updated {candidate.name} to {candidate.pin.commit[:12]}")
