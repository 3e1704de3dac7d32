"""run and status: the always-on runtime and what it is doing."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.text import Text

from anima.cli.app import (
    console,
    err_console,
    log_to_stderr,
    pass_home,
    plain,
    tabulate,
    warn_invalid_agents,
)
from anima.home import Home

if TYPE_CHECKING:
    from anima.message import Message


def show_retry(trigger: Message, event: object) -> None:
    """`run --once`: each retry of a model call, with its reason and the wait, as it happens."""
    from anima.llm import Retrying

    if isinstance(event, Retrying):
        err_console.print(
            Text(
                f"{trigger.to}: {event.reason}; retry {event.attempt} in {event.delay:.1f} s",
                style="yellow",
            )
        )


def _print_once(home: Home, names: tuple[str, ...], verbose: bool) -> None:
    from anima.runtime import run_once

    if verbose:
        log_to_stderr(verbose)
    failed = 0
    for r in run_once(home, list(names) or None, on_event=show_retry):
        if r.error:
            failed += 1
            err_console.print(
                f"[red]{escape(r.agent)}[/red]: turn failed, messages stay pending: "
                f"{escape(r.error)}"
            )
        else:
            console.print(
                f"[bold]{escape(r.agent)}[/bold] {r.commit and r.commit[:8]} "
                f"({len(r.message_ids)} message(s), {escape(r.model)}, {r.duration_ms} ms)"
            )
            if r.reply:
                console.print(r.reply.body, markup=False)
    if failed:
        sys.exit(2)


async def _serve(home: Home) -> bool:
    import asyncio
    import signal

    from anima.runtime import Runtime

    runtime = Runtime(home)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)  # Ctrl-C and systemd stop take one path
    return await runtime.run(stop)


@click.command()
@click.argument("names", nargs=-1)
@click.option("--once", is_flag=True, help="Answer what is pending now and exit.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option(
    "--exit-if-live",
    is_flag=True,
    help="Exit quietly (0) if a runtime is already live: for cron's keep-alive line.",
)
@pass_home
def run(home: Home, names: tuple[str, ...], once: bool, verbose: bool, exit_if_live: bool) -> None:
    """Run agents: watch every inbox and answer messages as they arrive (or --once)."""
    if exit_if_live:
        from anima.status import runtime_live

        if runtime_live(home):
            return
    if once:
        _print_once(home, names, verbose)
        return
    if names:
        raise click.UsageError("agent names only go with --once; `anima run` serves every agent")
    import asyncio
    import logging

    log_to_stderr(verbose)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # it logs every change at INFO
    # A turn still stuck in a model call past the grace period is abandoned with this process
    # (its worker is a daemon thread; the runtime logs it) and rolled back at the next start:
    # a requested stop that loses nothing is a clean exit either way.
    asyncio.run(_serve(home.require()))
    logging.shutdown()


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_home
def status_cmd(home: Home, as_json: bool) -> None:
    """Is the runtime live, and per agent: pending, last turn, last error, next heartbeat."""
    from anima import status

    data = status.collect(home.require())
    if as_json:
        data["invalid_agents"] = [str(p) for p in home.invalid_agent_dirs()]
        click.echo(json.dumps(data, indent=2, default=str))
        return
    if data["live"]:
        console.print(
            f"runtime: [green]live[/green] (pid {data['pid']}, since {escape(str(data['since']))})"
        )
    else:
        console.print(
            "runtime: [yellow]not running[/yellow] (start it: anima run, or anima units install)"
        )
    table = tabulate("agent", "pending", "last turn", "last error", "next heartbeat")
    agents = data["agents"]
    if len(agents) > QUIET_ROWS:  # a crowd: the agents with something to say, and a count
        agents = {n: a for n, a in agents.items() if _noteworthy(a)}
        console.print(
            f"{len(data['agents'])} agents; {len(agents)} with messages waiting, errors or "
            "pauses shown (all of them: anima status --json)"
        )
    for name, a in agents.items():
        last = a["last_turn"]
        table.add_row(  # whole cells, as plain text: the table wraps them, never cuts them
            *plain(
                name,
                str(a["pending"])
                + (f" ({a['rejected']} rejected)" if a["rejected"] else "")
                + (f" ({a['set_aside']} turn(s) set aside)" if a.get("set_aside") else "")
                + (" (self-started work paused)" if a.get("paused") else "")
                + _remote_note(a),
                f"{last['at']} {last['commit']}" + (" (an undo)" if last.get("undone") else "")
                if last
                else "-",
                _error_cell(a),
                _heartbeat_cell(a),
            )
        )
    console.print(table)
    for name, a in data["agents"].items():
        if pause := a.get("paused"):
            console.print(
                Text(
                    f"{name}: heartbeats, reminders and agent messages paused since "
                    f"{pause['since']}: {pause['reason']}; `anima resume {name}` lifts it",
                    style="yellow",
                )
            )
    warn_invalid_agents(home)


QUIET_ROWS = 50
"""Past this many agents, `anima status` lists only those with something to say."""


def _remote_note(a: dict[str, Any]) -> str:
    """An agent with a git remote: whether it runs here (its lease) and what is not pushed."""
    remote = a.get("remote")
    if not remote:
        return ""
    note = "" if remote.get("runs_here") else f" (not run here: {remote.get('lease')})"
    if remote.get("error"):
        note += f" (push failing: {remote['error']})"
    elif remote.get("behind"):
        note += " (not pushed yet)"
    return note


def _noteworthy(a: dict[str, Any]) -> bool:
    return bool(
        a["pending"]
        or a["rejected"]
        or a.get("set_aside")
        or a.get("paused")
        or a.get("git_busy")
        or a.get("failing")
        or a.get("last_error")
    )


def _heartbeat_cell(a: dict[str, Any]) -> str:
    """The next heartbeat and what delivers it, or why none will come."""
    driver = a.get("heartbeat_driver")
    if not driver:
        return "-"
    if a.get("next_heartbeat") is None:
        return f"none will come ({driver.removeprefix('none: ')})"
    return f"{a['next_heartbeat']} (by {driver})"


def _error_cell(a: dict[str, Any]) -> str:
    """The last error, or why messages wait right now (a person's merge half-way)."""
    if a.get("git_busy"):
        return f"waiting: {a['git_busy']} is in progress in its repository (finish or abort it)"
    err = a.get("last_error")
    if not err:
        return "-"
    return (f"{err['at']}: " if err.get("at") else "") + str(err["error"])
