"""`anima memory show|edit|search|reindex NAME`: a person inspecting and editing an agent's memory."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape
from rich.text import Text

from anima.cli.app import console, edit_file, err_console, pass_home
from anima.home import Home

if TYPE_CHECKING:
    from anima.agent import Agent


@click.group()
def memory() -> None:
    """Inspect, search and edit an agent's memory."""


def _note_path(agent: Agent, note: str) -> tuple[Path, str]:
    from anima.errors import BadName, ToolError
    from anima.memory import CORE
    from anima.tools.files import confine

    rel = (note or CORE).removeprefix("memory/")
    if not rel.endswith(".md"):
        rel += ".md"
    try:
        target = confine(agent.memory_dir, rel)
    except ToolError as exc:
        raise BadName(f"{note!r}: not a note inside memory/ ({exc})") from exc
    return target, rel


@memory.command()
@click.argument("name")
@click.argument("note", required=False)
@pass_home
def show(home: Home, name: str, note: str | None) -> None:
    """Print core memory (with its used/limit) and the notes index, or one NOTE."""
    from anima.agent import Agent
    from anima.context import memory_segment
    from anima.errors import AnimaError

    agent = Agent.open(home, name)
    if not note:
        click.echo(memory_segment(agent))
        return
    target, rel = _note_path(agent, note)
    if not target.is_file():
        raise AnimaError(f"memory/{rel}: no such note (see `anima memory show {name}`)")
    click.echo(target.read_text(encoding="utf-8"), nl=False)


@memory.command()
@click.argument("name")
@click.argument("note", required=False)
@pass_home
def edit(home: Home, name: str, note: str | None) -> None:
    """Open NOTE (default MEMORY.md) in $EDITOR and commit the edit as `external:`."""
    from anima import gitstore
    from anima.agent import Agent
    from anima.memory import cap_for

    agent = Agent.open(home, name)
    target, rel = _note_path(agent, note or "")
    target.parent.mkdir(parents=True, exist_ok=True)
    edit_file(str(target))
    if not target.exists():
        console.print("nothing saved")
        return
    size = len(target.read_text(encoding="utf-8"))
    cap = cap_for(rel, agent.config.budget)
    if size > cap:
        err_console.print(
            f"[yellow]warning:[/yellow] memory/{escape(rel)} has {size} characters, over its cap of "
            f"{cap}: the agent sees it truncated and is asked to condense it"
        )
    with gitstore.agent_lock(home.run_dir / "locks" / f"{name}.lock", timeout=30):
        sha = gitstore.commit_external(agent.path)
    console.print(f"committed {sha[:8]} (external)" if sha else "no change")


@memory.command()
@click.argument("name")
@click.argument("query")
@click.option("--limit", "-n", default=10, show_default=True, help="How many results.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_home
def search(home: Home, name: str, query: str, limit: int, as_json: bool) -> None:
    """Ranked keyword search over NAME's memory notes and conversation history."""
    from dataclasses import asdict

    from anima import search as index
    from anima.agent import Agent

    agent = Agent.open(home, name)
    # The index's own refresh (a walk of the files' stats) also sees edits not committed yet.
    hits = index.search(agent.path, query, limit=limit)
    if as_json:
        click.echo(json.dumps([asdict(h) for h in hits], indent=2, ensure_ascii=False))
        return
    if not hits:
        console.print("nothing found")
    for h in hits:
        console.print(Text.assemble((h.path, "bold"), f"  {h.date}" if h.date else ""))
        console.print(f"  {h.snippet}", markup=False)


@memory.command()
@click.argument("name")
@pass_home
def reindex(home: Home, name: str) -> None:
    """Rebuild NAME's search index from its files (it is a cache: safe at any time)."""
    from anima import search as index
    from anima.agent import Agent

    agent = Agent.open(home, name)
    started = time.monotonic()
    n = index.refresh(agent.path, rebuild=True)
    console.print(f"indexed {n} files in {time.monotonic() - started:.2f} s")
