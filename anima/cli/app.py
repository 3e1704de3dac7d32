"""Click group, shared options and the edge where AnimaError becomes one red line."""

from __future__ import annotations

import errno
import sys
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from anima.errors import AnimaError
from anima.home import Home

if TYPE_CHECKING:
    from rich.table import Table

# soft_wrap: lines are never folded by rich (paths, ids and unit text stay whole and copyable;
# the terminal wraps them); tables still fit the width and wrap inside their cells.
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class AnimaGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AnimaError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
            sys.exit(1)
        except OSError as exc:  # the machine, not a bug: a full disk, a read-only home
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            err_console.print(
                f"[red]error:[/red] {escape(exc.strerror or str(exc))}{escape(where)}: free space "
                "(or make the home writable) and run the command again; nothing was lost",
                soft_wrap=True,
            )
            sys.exit(1)


@click.group(cls=AnimaGroup)
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
        err_console.print(
            f"no $EDITOR set: opening {escape(editor)} (choose another: export EDITOR=nano)",
            soft_wrap=True,
        )
    click.edit(filename=path, editor=editor, require_save=False)


def tabulate(*headers: str, title: str | None = None) -> Table:
    """A table whose cells wrap, and fold what cannot wrap (paths, ids): never cut with '…'."""
    from rich.table import Column
    from rich.table import Table as RichTable

    return RichTable(*(Column(h, overflow="fold") for h in headers), title=title)


def plain(*values: object) -> list[Text]:
    """Table cells shown as they are: names, paths, errors and ids are never read as markup."""
    return [Text(str(v)) for v in values]


def _register() -> None:
    from anima.cli import (  # noqa: F401
        agents,
        channels,
        chat,
        demo,
        memory_cmds,
        messages,
        operator,
        runtime_cmds,
        units,
    )


_register()
