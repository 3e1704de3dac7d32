"""units and cron: run Anima under systemd (or cron)."""

from __future__ import annotations

from pathlib import Path

import click

from anima.cli.app import console, pass_home
from anima.home import Home


@click.group()
def units() -> None:
    """systemd user units: the runtime, heartbeat timers, channel adapters."""


@units.command("install")
@click.option("--dry-run", is_flag=True, help="Print the rendered units; write nothing.")
@click.option(
    "--dir",
    "target",
    type=click.Path(file_okay=False),
    default=None,
    help="Where to write (default ~/.config/systemd/user).",
)
@click.option("--no-enable", is_flag=True, help="Write the files but do not call systemctl.")
@pass_home
def units_install(home: Home, dry_run: bool, target: str | None, no_enable: bool) -> None:
    """Render the units with this machine's paths and enable them."""
    from anima import systemd

    home.require()
    if dry_run:
        for f in systemd.render_units(home):  # raw: unit text is never wrapped or styled
            click.echo(f"# {f.name}")
            click.echo(f.text)
        return
    path = Path(target) if target else systemd.user_unit_dir()
    for line in systemd.install_units(home, path, enable=not no_enable):
        console.print(line, markup=False)


@click.command()
@pass_home
def cron(home: Home) -> None:
    """Print crontab lines equivalent to the systemd units."""
    from anima import systemd

    for line in systemd.cron_lines(home.require()):
        click.echo(line)
