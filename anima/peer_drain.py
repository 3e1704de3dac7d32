"""Delivering to peers: each `spool/peer-NAME/` drained into the other home by the peer's
transport (anima.peer), with a channel's guarantees: exactly once (the other home's inbox is
idempotent by message id, and the id travels), in order per conversation, retried with backoff,
dead-lettered with the reason. The runtime runs `serve` beside its watcher; `anima run --once`
calls `once`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from anima import peer
from anima.home import Home
from anima.message import Message, render
from anima.spool import Drain, PermanentError, Progress, Spool, TransientError, attempt

log = logging.getLogger(__name__)

CONFIG_RECHECK = 2.0
"""How often a running drain looks for peers added to anima.toml meanwhile."""


class PeerSender:
    """`Send` for one peer: one transport (a warm SSH session, a keep-alive HTTP connection)."""

    def __init__(self, home: Home, name: str):
        self.home = home
        self.name = name
        self.transport = peer.connect(home, name)
        self.policy = peer.config(home, name).delivery

    async def __call__(self, msg: Message, progress: Progress) -> None:
        agent, _, _ = msg.to.partition("@")
        request = peer.request(self.home, "deliver", message=render(msg.with_(to=agent)))
        try:
            await asyncio.to_thread(self.transport.call, request, self.policy.send_timeout)
        except peer.PeerError as exc:
            if exc.permanent:
                raise PermanentError(str(exc)) from None
            raise TransientError(str(exc)) from None

    def close(self) -> None:
        self.transport.close()


def conversation_of(msg: Message) -> str:
    return msg.conversation


async def _drain_peer(home: Home, name: str, stop: asyncio.Event) -> None:
    try:
        sender = PeerSender(home, name)
    except Exception as exc:  # a bad [peers.NAME] table: say so, keep the others going
        log.warning("peer %s: not delivering: %s", name, exc)
        return
    spool = Spool(home, peer.spool_name(name))
    try:
        await Drain(spool, sender, sender.policy, ordered_by=conversation_of).run(stop)
    finally:
        await asyncio.to_thread(sender.close)


def retry_now(home: Home, name: str) -> int:
    """Let every record waiting for peer `name` go at the next look (its table changed: the
    backoff was for the old one). Returns how many were waiting."""
    spool = Spool(home, peer.spool_name(name), create=False)
    waiting = spool.waiting() if spool.new.is_dir() else []
    for path in waiting:
        progress = spool.progress(path.stem)
        if progress.data.get("next_at"):
            progress.data["next_at"] = 0.0
            progress.save()
    return len(waiting)


async def serve(home: Home, stop: asyncio.Event) -> None:
    """Drain every configured peer's spool until `stop`. anima.toml is read again every
    CONFIG_RECHECK seconds: a peer added is drained, one removed stops, one whose table changed
    (a URL fixed) is restarted on its new table and its records are retried at once."""
    running: dict[str, tuple[asyncio.Task[None], asyncio.Event, object]] = {}
    while not stop.is_set():
        try:
            tables: dict[str, object] | None = dict(home.config().peers)
        except Exception as exc:  # anima.toml mid-edit: the drains already running go on
            log.warning("peers: cannot read the configuration: %s", exc)
            tables = None
        if tables is not None:
            for name, (task, own_stop, table) in list(running.items()):
                if tables.get(name) != table:
                    own_stop.set()
                    await task
                    del running[name]
                    if name in tables:
                        n = await asyncio.to_thread(retry_now, home, name)
                        log.info("peer %s: its table changed; %d waiting record(s) go now", name, n)
            for name, table in tables.items():
                if name not in running:
                    own_stop = asyncio.Event()
                    task = asyncio.create_task(_drain_peer(home, name, own_stop))
                    running[name] = (task, own_stop, table)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), CONFIG_RECHECK)
    for _task, own_stop, _table in running.values():
        own_stop.set()
    if running:
        await asyncio.wait([task for task, _, _ in running.values()])


def once(home: Home) -> dict[str, int]:
    """`run --once`: try every due record of every configured peer once. Returns the records
    sent per peer."""
    sent: dict[str, int] = {}
    for name in home.config().peers:
        spool = Spool(home, peer.spool_name(name), create=False)
        if not spool.new.is_dir():
            continue
        waiting = _due(spool)
        if not waiting:
            continue
        sender = PeerSender(home, name)
        try:
            outcomes = asyncio.run(_attempt_all(spool, waiting, sender))
        finally:
            sender.close()
        sent[name] = outcomes.count("sent")
    return sent


def _due(spool: Spool) -> list[Path]:
    now = time.time()
    return [p for p in spool.waiting() if float(spool.progress(p.stem).data.get("next_at", 0)) <= now]


async def _attempt_all(spool: Spool, paths: list[Path], sender: PeerSender) -> list[str]:
    """In id order, one at a time (order per conversation holds); a conversation whose record
    is held back for a retry sends nothing more this time."""
    from anima.mailbox import read_message

    outcomes: list[str] = []
    blocked: set[str] = set()
    for path in paths:
        try:
            conversation = read_message(path, spool.channel).conversation
        except Exception:
            conversation = ""
        if conversation in blocked:
            continue
        outcome = await attempt(spool, path, sender, sender.policy)
        outcomes.append(outcome)
        if outcome == "retry":
            blocked.add(conversation)
    return outcomes
