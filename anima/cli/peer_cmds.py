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
    """Configured peers ([peers.NAME] in anima.toml), what waits for each and why. With
    --check, exits 1 if any peer does not answer."""
    from anima import peer
    from anima.channels import spool_counts
    from anima.cli.app import console, plain, tabulate
    from anima.errors import AnimaError

    home.require()
    counts = spool_counts(home)
    columns = ["peer", "url", "waiting", "failed", "sent", "last error"]
    table = tabulate(*columns, *(["answer"] if check else []))
    failing = 0
    for name, cfg in home.config().peers.items():
        c = counts.get(peer.spool_name(name), {})
        row = [name, cfg.url, c.get("waiting", 0), c.get("failed", 0), c.get("sent", 0)]
        row.append(_last_error(home, peer.spool_name(name)))
        if check:
            try:
                answer = peer.call(home, name, "hello", timeout=20)
                row.append(f"ok: {answer.get('host')} ({answer.get('agents')} agents)")
            except AnimaError as exc:
                row.append(f"error: {exc}")
                failing += 1
        table.add_row(*plain(*row))
    console.print(table)
    console.print(f"this home is {peer.this_host(home)!r} to its peers", markup=False)
    if failing:
        sys.exit(1)


def _last_error(home: Home, spool_name: str) -> str:
    """Why the oldest record waiting in a spool is still waiting, and when it goes next."""
    import time

    from anima.spool import Spool

    spool = Spool(home, spool_name, create=False)
    waiting = spool.waiting() if spool.new.is_dir() else []
    if not waiting:
        return "-"
    data = spool.progress(waiting[0].stem).data
    errors = data.get("errors") or []
    if not errors:
        return "-"
    wait = float(data.get("next_at", 0)) - time.time()
    return str(errors[-1]) + (f" (next try in {wait:.0f} s)" if wait > 0 else "")
