"""Outbox → inboxes, channel spools and peer spools (DESIGN §4), after the turn's commit. Idempotent by id.

A per-agent cursor in run/routed/ remembers the last commit whose outbox records were routed, so
records committed just before a crash are routed on the next start, exactly once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from anima import gitstore, mailbox, peer
from anima.errors import BadMessage, BadName
from anima.fsutil import write_atomic
from anima.home import Home
from anima.message import Message
from anima.spool import Spool

if TYPE_CHECKING:
    from anima.turn import AgentRun, TurnResult

log = logging.getLogger(__name__)

LOCAL_CHANNELS = ("cli", "file", "timer")
"""Replies on these channels are read from outbox/ by the REPL; they are not routed further."""


@dataclass
class Routed:
    delivered: list[Path] = field(default_factory=list)
    held: list[Message] = field(default_factory=list)
    """Agent messages not delivered because their chain reached max_agent_hops."""


def route(home: Home, messages: Iterable[Message], *, max_hops: int | None = None) -> Routed:
    """Deliver each message; already-delivered ones are skipped."""
    if max_hops is None:
        max_hops = home.config().runtime.max_agent_hops
    out = Routed()
    agents = home.agent_names()
    here = ""
    for msg in messages:
        if msg.channel == "agent":
            if msg.hops > max_hops:
                log.warning(
                    "not delivering %s from %s: agent chain reached %d hops",
                    msg.id,
                    msg.sender,
                    max_hops,
                )
                out.held.append(msg)
                continue
            remote = peer.split_address(msg.to)
            if remote is not None:
                here = here or peer.this_host(home)  # read once, and only when needed
            if remote is not None and remote[1] != here:
                _enqueue(home, peer.spool_name(remote[1]), msg, out)
                continue
            to = remote[0] if remote is not None else msg.to
            targets = [a for a in agents if a != msg.sender] if to == "all" else [to]
            for name in targets:
                if name in agents:
                    path = mailbox.deliver(home.agents_dir / name, msg.with_(to=name))
                    if path:
                        out.delivered.append(path)
        elif msg.channel not in LOCAL_CHANNELS:
            _enqueue(home, msg.channel, msg, out)
    return out


def _enqueue(home: Home, channel: str, msg: Message, out: Routed) -> None:
    """Into the spool of a channel or peer, once (a record naming no valid spool is logged
    and left in the outbox: git keeps it)."""
    try:
        path = Spool(home, channel, create=False).enqueue(msg)
    except BadName:
        log.warning("not routing %s: %r is not a channel or peer name", msg.id, channel[:60])
        return
    if path is not None:
        out.delivered.append(path)


def _cursor(home: Home, name: str) -> Path:
    return home.run_dir / "routed" / name


def mark_routed(home: Home, name: str, sha: str) -> None:
    # Not fsynced: a cursor lost to a power cut only makes the next start re-route, and
    # delivery is idempotent by id.
    write_atomic(_cursor(home, name), sha + "\n", durable=False)


def _read_cursor(home: Home, name: str) -> str:
    try:
        return _cursor(home, name).read_text().strip()
    except FileNotFoundError:
        return ""


def route_turn(home: Home, name: str, parent: str, result: TurnResult) -> Routed:
    """Route one turn right after its commit, so a reply never waits for the agent's other
    conversations. When the cursor stood at the commit the turn started from, its records are
    known without asking git; otherwise catch up from the log."""
    if not result.commit:
        return Routed()
    if _read_cursor(home, name) != parent:
        return route_pending(home, name)
    routed = route(home, result.outgoing)
    mark_routed(home, name, result.commit)
    return routed


def behind(home: Home, name: str) -> bool:
    """Has `name` commits whose outbox records are not routed yet? No git process: the cursor
    against HEAD's ref file. An agent never routed has nothing to route until its outbox/
    holds a record."""
    agent_dir = home.agents_dir / name
    cursor = _read_cursor(home, name)
    if not cursor:
        try:
            with os.scandir(agent_dir / "outbox") as entries:
                return any(not e.name.startswith(".") for e in entries)
        except FileNotFoundError:
            return False
    try:
        return cursor != gitstore.head(agent_dir)
    except gitstore.GitFailed:
        return True  # the pass says what is wrong


def route_run(home: Home, run: AgentRun) -> Routed:
    """After a pass: route whatever is committed but not routed yet (a crash between a commit
    and its routing, a routing that failed, commits made by hand)."""
    if behind(home, run.agent):
        return route_pending(home, run.agent)
    if not _read_cursor(home, run.agent):  # never routed, nothing to route: start the cursor
        mark_routed(home, run.agent, gitstore.head(home.agents_dir / run.agent))
    return Routed()


def route_pending(home: Home, name: str) -> Routed:
    """Route the outbox records of every commit of `name` since its cursor, then move it."""
    agent_dir = home.agents_dir / name
    try:
        since: str | None = _cursor(home, name).read_text().strip() or None
    except FileNotFoundError:
        since = None
    head, paths = gitstore.added_since(agent_dir, since, "outbox")
    messages = []
    for rel in paths:
        try:
            messages.append(mailbox.read_message(agent_dir / rel, name))
        except (BadMessage, FileNotFoundError) as exc:
            log.warning("%s: cannot route %s: %s", name, rel, exc)
    routed = route(home, messages)
    mark_routed(home, name, head)
    return routed
