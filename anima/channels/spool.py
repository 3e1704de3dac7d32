"""Outbound delivery for a channel adapter: drain `spool/<channel>/new/` into the service.

A record moves to `sent/YYYY-MM/` once the service accepted every part of it, or to `failed/`
with `<id>.error.md` when the service refused it for good or it kept failing. Each record is
sent on its own task with a timeout and its own retry schedule, so a stuck recipient never holds
up the others. Progress (parts already accepted, attempts, next try) lives in `state/<id>.json`,
written after each accepted part, so an adapter killed mid-send resumes where it stopped and
never sends an accepted part twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from anima import router
from anima.channels.base import PermanentError, TransientError
from anima.channels.config import Delivery
from anima.errors import BadMessage
from anima.fsutil import fsync_dir, write_atomic
from anima.home import Home
from anima.mailbox import read_message
from anima.message import Message, iso, utcnow

log = logging.getLogger(__name__)


class Progress:
    """How far one record got: parts the service accepted, failed attempts, when to try next."""

    def __init__(self, path: Path, data: dict[str, Any] | None = None):
        self.path = path
        self.data = data or {"parts_sent": 0, "attempts": 0, "next_at": 0.0, "errors": []}

    @property
    def parts_sent(self) -> int:
        return int(self.data.get("parts_sent", 0))

    def part_done(self) -> None:
        """Call right after the service accepted a part; durable before the next part goes."""
        self.data["parts_sent"] = self.parts_sent + 1
        self.save()

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.data) + "\n")


Send = Callable[[Message, Progress], Awaitable[None]]


class Spool:
    """The directories of one channel's outgoing spool."""

    def __init__(self, home: Home, channel: str):
        self.home = home
        self.channel = channel
        self.root = home.spool_dir / channel
        self.new = self.root / "new"
        self.sent = self.root / "sent"
        self.failed = self.root / "failed"
        self.state = self.root / "state"
        for d in (self.root / "tmp", self.new, self.sent, self.failed, self.state):
            d.mkdir(parents=True, exist_ok=True)

    def waiting(self) -> list[Path]:
        return sorted(
            Path(e.path)
            for e in os.scandir(self.new)
            if e.name.endswith(".md") and not e.name.startswith(".")
        )

    def progress(self, msg_id: str) -> Progress:
        path = self.state / f"{msg_id}.json"
        try:
            return Progress(path, json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return Progress(path)
        except ValueError:
            log.warning("%s: unreadable progress for %s; starting over", self.channel, msg_id)
            return Progress(path)

    def sent_path(self, msg_id: str) -> Path:
        return router.sent_path(self.home, self.channel, msg_id)

    def mark_sent(self, path: Path) -> Path:
        target = self.sent_path(path.stem)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        fsync_dir(target.parent)
        with contextlib.suppress(FileNotFoundError):
            (self.state / f"{path.stem}.json").unlink()
        return target

    def prune(self, keep_months: int) -> None:
        """Drop month shards of sent records and webhook replies older than `keep_months`."""
        for directory in (self.sent, self.root / "requests"):
            if removed := prune(directory, keep_months):
                log.info("%s: removed %s/ shards older than %d months: %s", self.channel, directory.name, keep_months, ", ".join(removed))

    def mark_failed(self, path: Path, reason: str, errors: Sequence[str] = ()) -> Path:
        target = self.failed / path.name
        note = f"# Not delivered by the {self.channel} adapter\n\n{reason}\n"
        if errors:
            note += "\nAttempts:\n" + "".join(f"- {e}\n" for e in errors)
        write_atomic(self.failed / f"{path.stem}.error.md", note)
        os.replace(path, target)
        fsync_dir(self.failed)
        with contextlib.suppress(FileNotFoundError):
            (self.state / f"{path.stem}.json").unlink()
        return target


def prune(directory: Path, keep_months: int) -> list[str]:
    """Remove `directory/YYYY-MM/` shards older than `keep_months` months. Returns the removed."""
    import shutil

    now = utcnow()
    index = now.year * 12 + now.month - 1 - keep_months
    cutoff = f"{index // 12:04d}-{index % 12 + 1:02d}"
    removed = []
    if directory.is_dir():
        for shard in sorted(directory.iterdir()):
            if shard.is_dir() and len(shard.name) == 7 and shard.name[4] == "-" and shard.name < cutoff:
                shutil.rmtree(shard)
                removed.append(shard.name)
    return removed


def _delay(policy: Delivery, attempts: int, retry_after: float | None) -> float:
    backoff = min(policy.max_backoff, policy.backoff * 2 ** max(0, attempts - 1))
    return max(backoff, retry_after or 0.0)


async def attempt(spool: Spool, path: Path, send: Send, policy: Delivery) -> str:
    """Try one record once. Returns "sent", "failed" or "retry"."""
    try:
        msg = read_message(path, spool.channel)
    except FileNotFoundError:
        return "sent"  # another drainer finished it
    except BadMessage as exc:
        spool.mark_failed(path, f"unreadable record: {exc}")
        return "failed"
    progress = spool.progress(msg.id)
    try:
        await asyncio.wait_for(send(msg, progress), policy.send_timeout)
    except PermanentError as exc:
        spool.mark_failed(path, f"the service refused it: {exc}", progress.data.get("errors", []))
        log.warning("%s: %s dead-lettered: %s", spool.channel, msg.id, exc)
        return "failed"
    except Exception as exc:  # transient, a timeout, or a bug: keep it and retry later
        if isinstance(exc, TimeoutError):
            why = f"no answer within {policy.send_timeout:g}s"
        else:
            why = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, TransientError | TimeoutError):
            log.exception("%s: unexpected error sending %s", spool.channel, msg.id)
        data = progress.data
        data["attempts"] = int(data.get("attempts", 0)) + 1
        data["errors"] = [*data.get("errors", []), f"{iso(utcnow())} {why}"][-20:]
        if data["attempts"] >= policy.max_attempts:
            spool.mark_failed(path, f"gave up after {data['attempts']} attempts", data["errors"])
            log.warning("%s: %s dead-lettered after %d attempts", spool.channel, msg.id, data["attempts"])
            return "failed"
        retry_after = exc.retry_after if isinstance(exc, TransientError) else None
        data["next_at"] = time.time() + _delay(policy, data["attempts"], retry_after)
        progress.save()
        log.info("%s: %s not sent (%s); retry %d in %.1fs", spool.channel, msg.id, why, data["attempts"], data["next_at"] - time.time())
        return "retry"
    spool.mark_sent(path)
    return "sent"


async def drain(
    spool: Spool,
    send: Send,
    policy: Delivery,
    stop: asyncio.Event,
    *,
    on_sent: Callable[[Message], None] | None = None,
    tick_ms: int = 1000,
) -> None:
    """Send whatever is due in new/ until `stop`; wakes on new files and every `tick_ms`."""
    from watchfiles import awatch

    inflight: dict[str, asyncio.Task[None]] = {}
    slots = asyncio.Semaphore(policy.concurrency)

    async def one(path: Path) -> None:
        async with slots:
            outcome = await attempt(spool, path, send, policy)
        if outcome == "sent" and on_sent is not None:
            with contextlib.suppress(Exception):
                on_sent(read_message(spool.sent_path(path.stem), spool.channel))

    def forget(key: str, _task: asyncio.Task[None]) -> None:
        inflight.pop(key, None)

    def start_due() -> None:
        now = time.time()
        for path in spool.waiting():
            if path.stem in inflight:
                continue
            if spool.progress(path.stem).data.get("next_at", 0) > now:
                continue
            key = path.stem
            inflight[key] = asyncio.create_task(one(path))
            inflight[key].add_done_callback(functools.partial(forget, key))

    next_cleanup = 0.0
    start_due()
    async for _ in awatch(
        spool.new, stop_event=stop, debounce=5, step=5, rust_timeout=tick_ms, yield_on_timeout=True
    ):
        start_due()
        if time.monotonic() >= next_cleanup:  # at start, then daily
            spool.prune(policy.keep_months)
            next_cleanup = time.monotonic() + 24 * 3600
    if inflight:  # let sends in flight finish (each is bounded by send_timeout)
        await asyncio.wait(list(inflight.values()), timeout=policy.send_timeout)
