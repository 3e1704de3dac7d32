"""Outbox → inboxes and channel spools (DESIGN §4), after the turn's commit. Idempotent by id."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from anima import mailbox
from anima.fsutil import write_atomic
from anima.home import Home
from anima.message import Message, render

LOCAL_CHANNELS = ("cli", "file", "timer")
"""Replies on these channels are read from outbox/ by the REPL; they are not routed further."""


def spool_path(home: Home, channel: str, msg_id: str) -> Path:
    return home.spool_dir / channel / "new" / f"{msg_id}.md"


def route(home: Home, messages: Iterable[Message]) -> list[Path]:
    """Deliver each message; returns the files written (already-delivered ones are skipped)."""
    written: list[Path] = []
    agents = home.agent_names()
    for msg in messages:
        if msg.channel == "agent":
            targets = [a for a in agents if a != msg.sender] if msg.to == "all" else [msg.to]
            for name in targets:
                if name in agents:
                    path = mailbox.deliver(home.agents_dir / name, msg.with_(to=name))
                    if path:
                        written.append(path)
        elif msg.channel not in LOCAL_CHANNELS:
            target = spool_path(home, msg.channel, msg.id)
            if not target.exists() and not (target.parent.parent / "sent" / target.name).exists():
                write_atomic(target, render(msg), tmp_dir=target.parent.parent / "tmp")
                written.append(target)
    return written
