"""channel, channels and pairing: run a channel adapter, see its spool, admit new senders."""

from __future__ import annotations

import json

import click

from anima.cli.app import console, log_to_stderr, pass_home, plain, tabulate
from anima.home import Home


@click.command()
@click.argument("name")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option(
    "--exit-if-live",
    is_flag=True,
    help="Exit quietly (0) if this adapter is already running: for cron's keep-alive line.",
)
@pass_home
def channel(home: Home, name: str, verbose: bool, exit_if_live: bool) -> None:
    """Run channel NAME ([channels.NAME] in anima.toml) until stopped (systemd:
    anima-channel@NAME.service)."""
    from anima import channels
    from anima.channels import config
    from anima.channels.base import require

    if exit_if_live and channels.live(home, name):
        return
    kind = config.load(home, name).kind
    require(channels.SDKS[kind], kind)  # a missing extra is one line, not a traceback

    log_to_stderr(verbose)
    channels.run(home.require(), name)


@click.command("channels")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_home
def channels_cmd(home: Home, as_json: bool) -> None:
    """Configured channels and their outgoing spools: waiting, dead-lettered, sent."""
    from anima import channels

    counts = channels.spool_counts(home.require())
    if as_json:
        click.echo(json.dumps(counts, indent=2))
        return
    table = tabulate("channel", "configured", "waiting", "failed", "sent")
    for name, c in counts.items():
        table.add_row(
            *plain(name, "yes" if c["configured"] else "no", c["waiting"], c["failed"], c["sent"])
        )
    console.print(table)
    if any(c["failed"] for c in counts.values()):
        console.print(
            f"dead letters and their reasons: {home.spool_dir}/<channel>/failed/", markup=False
        )


@click.group()
def pairing() -> None:
    """Admit people who asked to talk to your agents (they were sent a pairing code)."""


@pairing.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_home
def pairing_list(home: Home, as_json: bool) -> None:
    """Open pairing requests, and who has been admitted."""
    from dataclasses import asdict

    from anima.channels import access

    requests = access.pending(home)
    admitted = access.allowed(home)
    if as_json:
        click.echo(
            json.dumps({"pending": [asdict(r) for r in requests], "allowed": admitted}, indent=2)
        )
        return
    if requests:
        table = tabulate("channel", "code", "user", "name", "asked at", title="waiting for you")
        for r in requests:
            table.add_row(*plain(r.channel, r.code, r.user, r.name, r.created))
        console.print(table)
    else:
        console.print("no open pairing requests")
    if admitted:
        table = tabulate("channel", "user", "name", title="admitted")
        for row in admitted:
            table.add_row(*plain(*row))
        console.print(table)


@pairing.command("approve")
@click.argument("channel_name", metavar="CHANNEL")
@click.argument("code")
@pass_home
def pairing_approve(home: Home, channel_name: str, code: str) -> None:
    """Admit the sender of pairing code CODE on CHANNEL."""
    from anima.channels import access

    r = access.approve(home, channel_name, code)
    console.print(
        f"admitted {r.name} ({channel_name}:{r.user}); their next message reaches the agent",
        markup=False,
    )


@pairing.command("deny")
@click.argument("channel_name", metavar="CHANNEL")
@click.argument("code")
@pass_home
def pairing_deny(home: Home, channel_name: str, code: str) -> None:
    """Refuse pairing code CODE; that sender is ignored from now on."""
    from anima.channels import access

    r = access.deny(home, channel_name, code)
    console.print(f"denied {r.name} ({channel_name}:{r.user})", markup=False)


@pairing.command("revoke")
@click.argument("channel_name", metavar="CHANNEL")
@click.argument("user")
@pass_home
def pairing_revoke(home: Home, channel_name: str, user: str) -> None:
    """Take back USER's admission on CHANNEL."""
    from anima.channels import access
    from anima.errors import AnimaError

    if not access.revoke(home, channel_name, user):
        raise AnimaError(f"{channel_name}:{user} was not admitted by pairing")
    console.print(f"revoked {channel_name}:{user}", markup=False)
