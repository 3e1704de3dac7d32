"""`anima remote add|list`, `anima sync`, `anima clone`, `anima move`: agents' repositories on
git remotes, and agents handed from one home to another (anima/remotes.py)."""

from __future__ import annotations

import json

import click

from anima.cli.app import AnimaGroup, console, pass_home, plain, tabulate
from anima.home import Home


@click.group(cls=AnimaGroup)
def remote() -> None:
    """Git remotes the agents' repositories are pushed to."""


@remote.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--agent", default=None, help="Only this agent (URL is then its one repository).")
@pass_home
def add_cmd(home: Home, name: str, url: str, agent: str | None) -> None:
    """Push agents to URL: one repository per agent with {agent} in it
    (`/srv/anima/{agent}.git`, `git@host:backups/{agent}.git`), or one agent's with --agent."""
    from anima.remotes import add_remote

    add_remote(home, name, url, agent)
    who = agent or "every agent"
    console.print(f"remote {name}: {who} is pushed to {url} after each turn ([remotes.{name}] in anima.toml)",
                  markup=False)


@remote.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_home
def list_cmd(home: Home, as_json: bool) -> None:
    """Each agent with a remote: where it is pushed, whether it is behind, who holds its lease."""
    from anima.remotes import overview

    home.require()
    rows = overview(home)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print("no remotes: anima remote add NAME URL")
        return
    table = tabulate("agent", "remote", "url", "pushed", "lease")
    for r in rows:
        pushed = "behind" if r["behind"] else "up to date"
        if r["error"]:
            pushed += f" (last try: {r['error'][:120]})"
        table.add_row(*plain(r["agent"], r["remote"], r["url"], pushed, r["lease"]))
    console.print(table)


@click.command("sync")
@click.argument("remote_name", metavar="[NAME]", required=False)
@click.option("--agent", default=None, help="Only this agent.")
@pass_home
def sync(home: Home, remote_name: str | None, agent: str | None) -> None:
    """Push (and fetch) now: every agent with a remote, those of remote NAME, or --agent."""
    from anima.errors import AnimaError
    from anima.remotes import sync as do_sync

    done = do_sync(home, remote_name, agent)
    if not done:
        console.print("nothing to sync: no agent has a remote (anima remote add NAME URL)")
    for s in done:
        said = f"pushed {s.pushed[:8]} to {s.url}" if s.pushed else s.note or s.error
        console.print(f"{s.agent}: {said}", style="red" if s.error else None, markup=False, highlight=False)
    if any(s.error for s in done):
        raise AnimaError(f"{sum(1 for s in done if s.error)} agent(s) not pushed")


@click.command("clone")
@click.argument("url")
@click.argument("name", required=False)
@pass_home
def clone(home: Home, url: str, name: str | None) -> None:
    """Bring an agent another home pushed (URL of its repository) into this home as NAME."""
    from anima.remotes import clone as do_clone

    made = do_clone(home, url, name)
    console.print(
        f"cloned {made} from {url}; it runs here once this host holds its lease"
        " (when the other home moves it here: anima move, or its lease ends)"
    )


@click.command("move")
@click.argument("name")
@click.option("--to", "to_peer", required=True, help="The peer ([peers.NAME]) to hand it to.")
@pass_home
def move(home: Home, name: str, to_peer: str) -> None:
    """Hand agent NAME over to another home: stop it here, push, give the lease to that host,
    and have it adopt the agent. Run it again to finish a move that was cut short."""
    from anima.remotes import move as do_move

    done = do_move(home, name, to_peer)
    extra = f"; {done.forwarded} pending message(s) handed on" if done.forwarded else ""
    console.print(f"{name} moved to {done.to_peer} ({done.to_host}) at {done.head[:8]}{extra}")
