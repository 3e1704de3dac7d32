"""`anima serve-peer` (what an SSH peer runs here) and `anima peers` (the configured peers and
what waits for each)."""

from __future__ import annotations

import sys

import click

from anima.cli.app import pass_home
from anima.home import Home


@click.command("serve-peer")
@click.option("--peer", "peer", default=None, help="Who the caller is, whatever it claims "
              "(for a command= line in authorized_keys).")
@pass_home
def serve_peer(home: Home, peer: str | None) -> None:
    """Answer a peer's requests on stdin/stdout (run by `ssh HOST anima serve-peer`)."""
    import logging

    from anima import peer_ops

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    home.require()
    peer_ops.serve(home, sys.stdin.buffer, sys.stdout.buffer, peer=peer)


@click.command("peers")
@click.option("--check", is_flag=True, help="Ask each peer who it is (a connection check).")
@pass_home
def peers_cmd(home: Home, check: bool) -> None:
    """Configured peers ([peers.NAME] in anima.toml) and what waits for each."""
    from anima import peer
    from anima.channels import spool_counts
    from anima.cli.app import console, plain, tabulate
    from anima.errors import AnimaError

    home.require()
    counts = spool_counts(home)
    table = tabulate("peer", "url", "waiting", "failed", "sent", *(["answer"] if check else []))
    for name, cfg in home.config().peers.items():
        c = counts.get(peer.spool_name(name), {})
        row = [name, cfg.url, c.get("waiting", 0), c.get("failed", 0), c.get("sent", 0)]
        if check:
            try:
                answer = peer.call(home, name, "hello", timeout=20)
                row.append(f"ok: {answer.get('host')} ({answer.get('agents')} agents)")
            except AnimaError as exc:
                row.append(f"error: {exc}")
        table.add_row(*plain(*row))
    console.print(table)
    console.print(f"this home is {peer.this_host(home)!r} to its peers", markup=False)
