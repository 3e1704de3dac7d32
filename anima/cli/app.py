"""Click group, shared options and the edge where AnimaError becomes one red line.

Start-up cost is part of the interface: `anima tick` runs from timers and cron, `anima send` from
scripts. So a command's module is imported only when that command runs (LAZY_COMMANDS), and rich
only when something is printed through it (`console`, `err_console`, made on first use).
"""

from __future__ import annotations

import errno
import functools
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

from anima.errors import AnimaError
from anima.home import Home

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console: Console
    err_console: Console

LAZY_COMMANDS: dict[str, str] = {
    "init": "anima.cli.agents:init",
    "new": "anima.cli.agents:new",
    "agents": "anima.cli.agents:agents_cmd",
    "rm": "anima.cli.agents:rm_cmd",
    "rename": "anima.cli.agents:rename_cmd",
    "resume": "anima.cli.agents:resume_cmd",
    "edit": "anima.cli.agents:edit_cmd",
    "log": "anima.cli.agents:log_cmd",
    "channel": "anima.cli.channels:channel",
    "channels": "anima.cli.channels:channels_cmd",
    "pairing": "anima.cli.channels:pairing",
    "chat": "anima.cli.chat:chat",
    "demo": "anima.cli.demo:demo",
    "memory": "anima.cli.memory_cmds:memory",
    "send": "anima.cli.messages:send",
    "tick": "anima.cli.messages:tick",
    "show": "anima.cli.operator:show",
    "undo": "anima.cli.operator:undo",
    "stats": "anima.cli.operator:stats",
    "doctor": "anima.cli.operator:doctor",
    "run": "anima.cli.runtime_cmds:run",
    "status": "anima.cli.runtime_cmds:status_cmd",
    "units": "anima.cli.units:units",
    "cron": "anima.cli.units:cron",
    "model": "anima.cli.model_cmds:model",
    "mcp": "anima.cli.mcp_cmds:mcp",
    "skills": "anima.cli.skills_cmds:skills",
    "proposals": "anima.cli.proposals_cmds:proposals",
    "web": "anima.cli.web_cmds:web",
    "reflect": "anima.cli.reflect_cmds:reflect",
    "update": "anima.cli.agents:update_cmd",
    "market": "anima.cli.market_cmds:market",
    "serve-peer": "anima.cli.peer_cmds:serve_peer",
    "peers": "anima.cli.peer_cmds:peers_cmd",
    "remote": "anima.cli.remote_cmds:remote",
    "sync": "anima.cli.remote_cmds:sync",
    "clone": "anima.cli.remote_cmds:clone",
    "move": "anima.cli.remote_cmds:move",
}
"""Every `anima` subcommand: name -> "module:attribute" of its click command, imported when run."""


def load_command(target: str) -> click.Command | None:
    """The click command at "module:attribute", or None if that module does not exist (yet: a
    command may be listed here before its module is written). Any other failure is a bug: raised."""
    module_name, _, attr = target.partition(":")
    try:  # __import__, not importlib.import_module: `python -X importtime` shows it
        module = __import__(module_name, fromlist=[attr])
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise
    command = getattr(module, attr)
    if not isinstance(command, click.Command):
        raise TypeError(f"{target} is a {type(command).__name__}, not a click command")
    return command


def command_exists(target: str) -> bool:
    """Whether the module behind `target` exists, without importing it."""
    import importlib.util

    return importlib.util.find_spec(target.partition(":")[0]) is not None


@functools.cache
def _console(stderr: bool) -> Console:
    from rich.console import Console

    # soft_wrap: lines are never folded by rich (paths, ids and unit text stay whole and
    # copyable; the terminal wraps them); tables still fit the width and wrap inside their cells.
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def __getattr__(name: str) -> Any:
    """`console` and `err_console`: rich's consoles, made when a command first asks for one."""
    if name in ("console", "err_console"):
        return _console(stderr=name == "err_console")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def print_error(text: str) -> None:
    """One red `error:` line on stderr; `text` is shown as it is, never read as markup."""
    from rich.markup import escape

    _console(stderr=True).print(f"[red]error:[/red] {escape(text)}", soft_wrap=True)


def warn_invalid_agents(home: Home) -> list[str]:
    """Say which directories under agents/ are ignored for their name (agents, status)."""
    problems = [home.invalid_agent_problem(p) for p in home.invalid_agent_dirs()]
    if problems:
        from rich.markup import escape

        for problem in problems:
            _console(stderr=True).print(f"[yellow]warning:[/yellow] {escape(problem)}")
    return problems


def fail(exc: Exception) -> NoReturn:
    """The CLI's edge: an error a person can act on (AnimaError, a full disk, a read-only home)
    becomes one red line and exit status 1. Anything else is a bug, raised with its traceback."""
    if isinstance(exc, AnimaError):
        print_error(str(exc))
        sys.exit(1)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        where = f" ({exc.filename})" if exc.filename else ""
        print_error(
            f"{exc.strerror or exc}{where}: free space "
            "(or make the home writable) and run the command again; nothing was lost"
        )
        sys.exit(1)
    raise exc


class AnimaGroup(click.Group):
    """A group whose commands' errors go through fail(): one red line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (AnimaError, OSError) as exc:
            fail(exc)


class LazyGroup(AnimaGroup):
    """The `anima` group: its commands are LAZY_COMMANDS, and only the invoked one is imported.
    `anima --help` lists them all, so it imports them all (each module's click command carries its
    own help: one place to write it)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        lazy = (name for name, target in LAZY_COMMANDS.items() if command_exists(target))
        return sorted({*super().list_commands(ctx), *lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(cmd_name)
        command = load_command(target) if target else None
        return command or super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup)
@click.option(
    "--home",
    "home_path",
    type=click.Path(file_okay=False),
    envvar="ANIMA_HOME",
    help="Anima home directory (default ~/.anima, or $ANIMA_HOME).",
)
@click.version_option(package_name="anima")
@click.pass_context
def main(ctx: click.Context, home_path: str | None) -> None:
    """Anima: personal AI agents as git repositories of Markdown. Every turn is a commit."""
    ctx.obj = Home.locate(home_path)


pass_home = click.make_pass_decorator(Home)


NOISY_LOGGERS = (
    *("watchfiles", "httpx", "httpcore", "httpx2", "httpcore2"),  # httpx2: newer anthropic SDKs
    *("telegram", "discord", "aiohttp.access"),
)
"""Libraries that log every change or HTTP request at INFO: shown only with -v."""


def quiet_libraries(verbose: bool) -> None:
    import logging

    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)


def log_to_stderr(verbose: bool) -> None:
    """The long-running commands log to stderr, which journald reads under systemd."""
    import logging

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    quiet_libraries(verbose)


FALLBACK_EDITORS = ("sensible-editor", "nano", "vim", "vi")


def edit_file(path: str) -> None:
    """Open `path` in $VISUAL or $EDITOR; without either, say which editor opens and how to
    choose another, rather than dropping a person into vi unannounced."""
    import os
    import shutil

    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor:
        editor = next((e for e in FALLBACK_EDITORS if shutil.which(e)), None)
        if editor is None:
            raise AnimaError(
                f"no editor found to open {path}: set EDITOR (export EDITOR=nano) and try again"
            )
        _console(stderr=True).print(
            f"no $EDITOR set: opening {editor} (choose another: export EDITOR=nano)",
            markup=False,
        )
    click.edit(filename=path, editor=editor, require_save=False)


def tabulate(*headers: str, title: str | None = None) -> Table:
    """A table whose cells wrap, and fold what cannot wrap (paths, ids): never cut with '…'."""
    from rich.table import Column
    from rich.table import Table as RichTable

    return RichTable(*(Column(h, overflow="fold") for h in headers), title=title)


def plain(*values: object) -> list[Text]:
    """Table cells shown as they are: names, paths, errors and ids are never read as markup."""
    from rich.text import Text

    return [Text(str(v)) for v in values]
