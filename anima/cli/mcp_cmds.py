"""`anima mcp list [NAME]`: the MCP servers agents use, their state and their tools."""

from __future__ import annotations

import json

import click

from anima.cli.app import AnimaGroup, console, pass_home, plain, tabulate
from anima.home import Home


@click.group(cls=AnimaGroup)
def mcp() -> None:
    """Model Context Protocol servers: the tools agents get from them."""


@mcp.command("list")
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_home
def list_cmd(home: Home, names: tuple[str, ...], as_json: bool) -> None:
    """Show each configured server (or only NAMES): transport, state, tools. Servers are started
    to list their tools (each within its timeout) and stopped again."""
    from anima.errors import BadName
    from anima.mcp_client import survey

    home.require()
    rows = survey(home, names)
    unknown = sorted(set(names) - {r.name for r in rows})
    if unknown:
        raise BadName(f"no MCP server named {', '.join(unknown)} in anima.toml or any agent.toml")
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    if not rows:
        console.print("no MCP servers configured ([mcp.NAME] in anima.toml or agent.toml)")
        return
    table = tabulate("server", "transport", "state", "tools", "agents")
    for r in rows:
        state = f"{r.state}: {r.error}" if r.error else r.state
        tools = ", ".join(r.tools) or "-"
        table.add_row(*plain(r.name, r.transport, state, tools, ", ".join(r.agents) or "-"))
    console.print(table)
