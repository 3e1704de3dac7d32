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
