"""init, new, agents, log: the home and its agents."""

from __future__ import annotations

import json
import sys

import click
from rich.markup import escape
from rich.text import Text

from anima.agent import EDITABLE
from anima.cli.app import (
    console,
    edit_file,
    err_console,
    pass_home,
    plain,
    print_error,
    tabulate,
    warn_invalid_agents,
)
from anima.home import Home


@click.command()
@pass_home
def init(home: Home) -> None:
    """Create the Anima home (anima.toml, always.md, agents/)."""
    created = home.init()
    console.print(f"{'created' if created else 'already there'}: {escape(str(home.root))}")


@click.command()
@click.argument("name")
@click.option(
    "--from",
    "from_",
    metavar="GIT_URL[#REF]",
    help="Make it from a template repository (or a marketplace name); kept as its upstream.",
)
@pass_home
def new(home: Home, name: str, from_: str | None) -> None:
    """Create agent NAME from the template, as a new git repository."""
    from anima.agent import create_agent
    from anima.templates import new_from

    home.init()
    agent = new_from(home, name, from_) if from_ else create_agent(home, name)
    console.print(f"created agent [bold]{name}[/bold] at {escape(str(agent.path))}")
    if from_:
        console.print(f"from template {escape(from_)} (anima update {name} merges its changes)")
    console.print(f"edit {escape(str(agent.path / 'persona.md'))} to say who {name} is")


@click.command("agents")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_home
def agents_cmd(home: Home, as_json: bool) -> None:
    """List agents: the provider/model their turns use (and where that is set), pending
    messages, last turn, heartbeat."""
    from anima import status
    from anima.agent import Agent, effective_model
    from anima.errors import AnimaError

    home.require()
    rows = []
    names = home.agent_names()
    known = status.known_agents(home, names, live=status.runtime_live(home))  # git only if changed
    for name in names:
        st = status.agent_status(home, name, known[name])
        try:
            agent = Agent(home, name)
            used = effective_model(agent)
        except AnimaError as exc:  # one bad agent.toml: its row says so, the others still list
            rows.append({"name": name, "error": str(exc), "pending": st["pending"]})
            continue
        rows.append(
            {
                "name": name,
                "provider": used.provider,
                "provider_from": used.provider_from,
                "model": used.model,
                "model_from": used.model_from,
                "pending": st["pending"],
                "last_turn": st["last_turn"],
                "heartbeat": agent.config.heartbeat.every or None,
                "next_heartbeat": st["next_heartbeat"],
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        warn_invalid_agents(home)  # on stderr: the JSON stays parseable
        return
    table = tabulate("name", "provider/model (set in)", "pending", "last turn", "heartbeat")
    for r in rows:
        if "error" in r:
            table.add_row(*plain(r["name"], f"error: {r['error']}", r["pending"], "-", "-"))
            continue
        last = r["last_turn"]
        where = r["provider_from"]
        if r["model_from"] not in (where, "provider default"):
            where += f"; model: {r['model_from']}"
        table.add_row(
            *plain(
                r["name"],
                f"{r['provider']}/{r['model']}\n({where})",
                r["pending"],
                f"{last['at']} {last['commit']}" if last else "-",
                r["heartbeat"] or "-",
            )
        )
    console.print(table)
    warn_invalid_agents(home)


@click.command("rm")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_home
def rm_cmd(home: Home, name: str, yes: bool) -> None:
    """Remove agent NAME: its repository is moved to $ANIMA_HOME/trash/, not deleted."""
    from anima.agent import Agent, remove_agent, trash_dir

    agent = Agent.open(home, name)
    pending = len(list(agent.inbox.glob("*.md")))
    question = f"Move agent {name} to {trash_dir(home)}/" + (
        f" ({pending} message(s) still pending)?" if pending else "?"
    )
    if not yes and not click.confirm(question):
        err_console.print("nothing removed")
        sys.exit(1)
    target = remove_agent(home, name)
    console.print(f"removed {escape(name)}: its repository is now {escape(str(target))}")
    console.print(f"(to restore it: mv {escape(str(target))} {escape(str(agent.path))})")


@click.command("rename")
@click.argument("old")
@click.argument("new")
@pass_home
def rename_cmd(home: Home, old: str, new: str) -> None:
    """Rename agent OLD to NEW, keeping its git history (not while a runtime is live)."""
    from anima.agent import rename_agent

    agent = rename_agent(home, old, new)
    console.print(f"renamed {escape(old)} to {escape(new)}: {escape(str(agent.path))}")
    notes = [f"persona.md may still call it {old}: anima edit {new} persona"]
    if agent.config.heartbeat.every:
        notes.append("its heartbeat timer has the old name: anima units install (or anima cron)")
    for note in notes:
        console.print(Text(note, style="dim"))


@click.command("resume")
@click.argument("name")
@pass_home
def resume_cmd(home: Home, name: str) -> None:
    """Lift NAME's budget pause: its held heartbeats, reminders and agent messages run again,
    and its [autonomy] budgets start afresh."""
    from anima import budget
    from anima.agent import Agent
    from anima.status import runtime_live

    Agent.open(home, name)
    lifted = budget.resume(home, name)
    if lifted is None:
        console.print(f"{escape(name)} is not paused: nothing to resume")
        return
    console.print(
        f"resumed {escape(name)} (paused since {escape(str(lifted['since']))}: "
        f"{escape(str(lifted['reason']))})"
    )
    if not runtime_live(home):
        console.print(Text("no runtime is live: held messages run at the next anima run", "dim"))


@click.command("edit")
@click.argument("name")
@click.argument("what", type=click.Choice(list(EDITABLE)), default="persona")
@pass_home
def edit_cmd(home: Home, name: str, what: str) -> None:
    """Edit NAME's persona (default), always.md or config (agent.toml) in $EDITOR; the edit is
    checked (config) and committed as a hand edit."""
    import tempfile
    from pathlib import Path

    from anima.agent import Agent, editable_path, save_hand_edit
    from anima.errors import AnimaError, BadConfig

    agent = Agent.open(home, name)
    path = editable_path(agent, what)
    drafts = home.run_dir / "edits"
    drafts.mkdir(parents=True, exist_ok=True)
    fd, name_ = tempfile.mkstemp(prefix=f"{name}-", suffix=f"-{path.name}", dir=drafts)
    draft = Path(name_)
    with open(fd, "w", encoding="utf-8") as fh:
        fh.write(agent.read(path.name))
    while True:
        edit_file(str(draft))
        try:
            sha = save_hand_edit(agent, what, draft.read_text(encoding="utf-8"))
        except BadConfig as exc:
            print_error(str(exc))
            if click.confirm("Edit it again?", default=True):
                continue
            raise AnimaError(f"{path.name} not changed; your edit is kept in {draft}") from None
        break
    draft.unlink()
    console.print(f"committed {sha[:8]}: {escape(path.name)}" if sha else "no change")


@click.command("log")
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
        console.print(Text.assemble((e.short, "yellow"), " ", (e.date, "dim"), " ", e.subject))
        if "Anima-Model" in t:
            console.print(
                Text(
                    f"         {t.get('Anima-Model')} · {t.get('Anima-Tokens-In')}→"
                    f"{t.get('Anima-Tokens-Out')} tokens · {t.get('Anima-Tool-Calls')} tool calls"
                    f" · {t.get('Anima-Duration-Ms')} ms · {t.get('Anima-Message')}",
                    style="dim",
                )
            )


@click.command("update")
@click.argument("name")
@pass_home
def update_cmd(home: Home, name: str) -> None:
    """Merge the changes of NAME's template (its upstream remote) into it; its memory,
    history, messages and workspace are never changed. Stops on a conflict, changing nothing."""
    from anima.templates import update

    done = update(home, name)
    if done.up_to_date:
        console.print(f"{escape(name)} is up to date with its template ({done.template[:12]})")
        return
    console.print(
        f"updated {escape(name)} to template {done.template[:12]}: commit {done.after[:8]}"
    )
    if done.stat.strip():
        console.print(Text(done.stat.rstrip()))
    if done.kept:
        kept = ", ".join(done.kept[:10]) + (" …" if len(done.kept) > 10 else "")
        console.print(Text(f"kept the agent's own version of: {kept}", style="dim"))
