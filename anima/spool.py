"""Outbound delivery: the spool of each channel and peer, `spool/<name>/`, and its drain.

The router enqueues a record into `new/` (idempotent by id: a record already waiting, sent or
dead-lettered is not enqueued again); a channel adapter or a peer drain sends it.

A record moves to `sent/YYYY-MM/` once the service accepted every part of it, or to `failed/`
with `<id>.error.md` when the service refused it for good or it kept failing. Each record is
sent on its own task with a timeout and its own retry schedule, so a stuck recipient never holds
up the others. Progress (parts already accepted, attempts, next try) lives in `state/<id>.json`,
written after each accepted part, so an adapter killed mid-send resumes where it stopped and
never sends a part the service acknowledged twice.

The guarantee, stated plainly: a part is delivered **at least once**. An adapter killed after
the service accepted a part but before its progress was written sends that part again on
restart, and Telegram's and Discord's send APIs take no idempotency key to collapse the two.
It is **exactly once** where the receiver deduplicates by id: agent inboxes (delivery is
idempotent by message id) and the webhook's outgoing POST, which carries the message id (and
signature) for the receiver to deduplicate. Nothing is lost either way: a record leaves `new/`
only for `sent/` or `failed/`.
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

from anima import mailbox
from anima.config import Delivery
from anima.errors import BadMessage, BadName
from anima.fsutil import fsync_dir, write_atomic
from anima.home import Home
from anima.mailbox import read_message
from anima.message import Message, iso, render, utcnow, valid_id

log = logging.getLogger(__name__)


class TransientError(Exception):
    """The service may accept the message later (network, 5xx, rate limit): retry with backoff."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    """The service will never accept it (chat gone, bot blocked, bad request): dead-letter it."""


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


_RUNNING: dict[Path, Callable[[], object]] = {}
"""Drains running in this process, by spool root: a record enqueued here wakes its drain at
once instead of at the watcher's next step (the runtime routes and drains peers itself)."""


class Spool:
    """One channel's or peer's outgoing spool: `new/` waiting, `sent/YYYY-MM/`, `failed/` (each
    with `<id>.error.md`), `state/` (progress of records in flight), `tmp/`."""

    def __init__(self, home: Home, channel: str, *, create: bool = True):
        if not valid_id(channel):
            raise BadName(f"not a channel name: {channel[:60]!r}")
        self.home = home
        self.channel = channel
        self.root = home.spool_dir / channel
        self.new = self.root / "new"
        self.sent = self.root / "sent"
        self.failed = self.root / "failed"
        self.state = self.root / "state"
        if create:
            for d in (self.root / "tmp", self.new, self.sent, self.failed, self.state):
                d.mkdir(parents=True, exist_ok=True)

    def holds(self, msg_id: str) -> bool:
        """Already handed to this spool: waiting, sent, or dead-lettered."""
        paths = (self.new / f"{msg_id}.md", self.sent_path(msg_id), self.failed_path(msg_id))
        return any(p.exists() for p in paths)

    def enqueue(self, msg: Message) -> Path | None:
        """Put `msg` in new/ for the drain, atomically; None when this spool already had it."""
        if self.holds(msg.id):
            return None
        target = self.new / f"{msg.id}.md"
        write_atomic(target, render(msg), tmp_dir=self.root / "tmp")
        if (wake := _RUNNING.get(self.root)) is not None:
            wake()
        return target

    def failed_path(self, msg_id: str) -> Path:
        return self.failed / f"{msg_id}.md"

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
        """Sent records by month: no directory grows for ever."""
        return self.sent / mailbox.month_of(msg_id) / f"{msg_id}.md"

    def _finish(self, path: Path, target: Path) -> Path:
        """Move a record out of new/ for good; its progress is no longer needed."""
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        fsync_dir(target.parent)
        with contextlib.suppress(FileNotFoundError):
            (self.state / f"{path.stem}.json").unlink()
        return target

    def mark_sent(self, path: Path) -> Path:
        return self._finish(path, self.sent_path(path.stem))

    def prune(self, keep_months: int) -> None:
        """Drop month shards of sent records and webhook replies older than `keep_months`."""
        for directory in (self.sent, self.root / "requests"):
            if removed := prune(directory, keep_months):
                log.info(
                    "%s: removed %s/ shards older than %d months: %s",
                    self.channel,
                    directory.name,
                    keep_months,
                    ", ".join(removed),
                )

    def mark_failed(self, path: Path, reason: str, errors: Sequence[str] = ()) -> Path:
        note = f"# Not delivered by the {self.channel} adapter\n\n{reason}\n"
        if errors:
            note += "\nAttempts:\n" + "".join(f"- {e}\n" for e in errors)
        write_atomic(self.failed / f"{path.stem}.error.md", note)
        return self._finish(path, self.failed_path(path.stem))

    def dead_letter(self, msg_id: str) -> Path:
        """The record `msg_id` in failed/ (a plain file, not a symlink), else BadName."""
        if not valid_id(msg_id):
            raise BadName(f"not a message id: {msg_id[:60]!r}")
        path = self.failed_path(msg_id)
        if path.is_symlink() or not path.is_file():
            raise BadName(f"no dead letter {msg_id} in {self.channel}")
        return path

    def retry(self, msg_id: str) -> Path:
        """Send a dead letter again: back into new/ with a fresh retry schedule (its error note
        and progress go), so the adapter takes it up like a new record. Returns its new path."""
        path = self.dead_letter(msg_id)
        target = self.new / path.name
        os.replace(path, target)
        fsync_dir(self.new)
        for stale in (self.failed / f"{msg_id}.error.md", self.state / f"{msg_id}.json"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        return target

    def drop(self, msg_id: str) -> Path:
        """Set a dead letter aside for good: into dropped/ with its error note (the agent's
        outbox keeps the record in git either way). Returns its new path."""
        path = self.dead_letter(msg_id)
        dropped = self.root / "dropped"
        dropped.mkdir(exist_ok=True)
        note = self.failed / f"{msg_id}.error.md"
        with contextlib.suppress(FileNotFoundError):
            os.replace(note, dropped / note.name)
        target = dropped / path.name
        os.replace(path, target)
        fsync_dir(dropped)
        return target


def existing(home: Home, channel: str) -> Spool:
    """The spool of a channel that has one; BadName for any other name (nothing is created)."""
    root = home.spool_dir / channel
    if not valid_id(channel) or root.is_symlink() or not root.is_dir():
        raise BadName(f"no spool for channel {channel[:60]!r}")
    return Spool(home, channel)


def retry(home: Home, channel: str, msg_id: str) -> Path:
    """`Spool.retry` on `channel`'s spool, the names checked first (e.g. from a web form)."""
    return existing(home, channel).retry(msg_id)


def drop(home: Home, channel: str, msg_id: str) -> Path:
    """`Spool.drop` on `channel`'s spool, the names checked first (e.g. from a web form)."""
    return existing(home, channel).drop(msg_id)


def prune(directory: Path, keep_months: int) -> list[str]:
    """Remove `directory/YYYY-MM/` shards older than `keep_months` months. Returns the removed."""
    import shutil

    now = utcnow()
    index = now.year * 12 + now.month - 1 - keep_months
    cutoff = f"{index // 12:04d}-{index % 12 + 1:02d}"
    removed = []
    if directory.is_dir():
        for shard in sorted(directory.iterdir()):
            if (
                shard.is_dir()
                and len(shard.name) == 7
                and shard.name[4] == "-"
                and shard.name < cutoff
            ):
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
            log.warning(
                "%s: %s dead-lettered after %d attempts", spool.channel, msg.id, data["attempts"]
            )
            return "failed"
        retry_after = exc.retry_after if isinstance(exc, TransientError) else None
        data["next_at"] = time.time() + _delay(policy, data["attempts"], retry_after)
        progress.save()
        log.info(
            "%s: %s not sent (%s); retry %d in %.1fs",
            spool.channel,
            msg.id,
            why,
            data["attempts"],
            data["next_at"] - time.time(),
        )
        return "retry"
    spool.mark_sent(path)
    return "sent"


WATCH_STEP_MS = 20
"""How often the watcher looks for new records. Outbound p50 is 20 ms at 20 ms and 13 ms at
5 ms, but an idle adapter then used 1.5-2.5 % of a core instead of 0.6 % (bench/channels.py);
nobody waiting on a reply notices 7 ms."""
RESCAN = 5.0
"""Longest sleep without a look at new/, whatever the watcher says (a safety net: one scandir)."""


class Drain:
    """Sends whatever is due in new/ until stopped. Wakes on a new record, when a send finishes,
    and when the earliest retry falls due; prunes old shards at start and then daily."""

    def __init__(
        self,
        spool: Spool,
        send: Send,
        policy: Delivery,
        on_sent: Callable[[Message], None] | None = None,
        *,
        ordered_by: Callable[[Message], str] | None = None,
    ):
        self.spool = spool
        self.send = send
        self.policy = policy
        self.on_sent = on_sent
        self.ordered_by = ordered_by
        """With it, records of one key (a conversation) go one at a time, oldest first: a
        record waiting for its retry holds back the later ones of its key."""
        self._keys: dict[str, str] = {}
        self.inflight: dict[str, asyncio.Task[None]] = {}
        self.slots = asyncio.Semaphore(policy.concurrency)
        self.wake = asyncio.Event()

    async def _one(self, path: Path) -> None:
        async with self.slots:
            outcome = await attempt(self.spool, path, self.send, self.policy)
        if outcome == "sent" and self.on_sent is not None:
            with contextlib.suppress(Exception):
                self.on_sent(read_message(self.spool.sent_path(path.stem), self.spool.channel))

    def _group(self, path: Path) -> str | None:
        """The ordering key of a waiting record (read once), or None when unordered."""
        if self.ordered_by is None:
            return None
        if path.stem not in self._keys:
            try:
                self._keys[path.stem] = self.ordered_by(read_message(path, self.spool.channel))
            except (BadMessage, OSError):
                self._keys[path.stem] = ""  # attempt() dead-letters it
        return self._keys[path.stem]

    def _finished(self, key: str, _task: asyncio.Task[None]) -> None:
        self.inflight.pop(key, None)
        if not (self.spool.new / f"{key}.md").exists():
            self._keys.pop(key, None)  # sent or dead-lettered: its key is not needed again
        self.wake.set()  # a retry may now be scheduled: recompute the next wake-up

    def start_due(self) -> float:
        """Start every record that is due; return seconds until the next one falls due."""
        now = time.time()
        wait = RESCAN
        busy = {self._keys.get(k, "") for k in self.inflight} if self.ordered_by else set()
        for path in self.spool.waiting():
            key = path.stem
            if key in self.inflight:
                continue
            group = self._group(path)
            if group is not None:
                if group in busy:
                    continue  # an earlier record of its conversation is in flight or waiting
                busy.add(group)
            next_at = float(self.spool.progress(key).data.get("next_at", 0))
            if next_at > now:
                wait = min(wait, next_at - now)
                continue
            self.inflight[key] = asyncio.create_task(self._one(path))
            self.inflight[key].add_done_callback(functools.partial(self._finished, key))
        return wait

    async def _watch(self, stop: asyncio.Event) -> None:
        from watchfiles import awatch

        async for _ in awatch(
            self.spool.new,
            stop_event=stop,
            step=WATCH_STEP_MS,
            debounce=WATCH_STEP_MS,
            recursive=False,
        ):
            self.wake.set()
        self.wake.set()  # stopped

    async def run(self, stop: asyncio.Event) -> None:
        watcher = asyncio.create_task(self._watch(stop))
        await asyncio.sleep(0)  # the watcher registers before the first scan: no record slips by
        loop = asyncio.get_running_loop()
        _RUNNING[self.spool.root] = lambda: loop.call_soon_threadsafe(self.wake.set)
        try:
            await self._loop(stop)
        finally:
            _RUNNING.pop(self.spool.root, None)
        await watcher
        if self.inflight:  # let sends in flight finish (each is bounded by send_timeout)
            await asyncio.wait(list(self.inflight.values()), timeout=self.policy.send_timeout)

    async def _loop(self, stop: asyncio.Event) -> None:
        next_cleanup = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() >= next_cleanup:
                    self.spool.prune(self.policy.keep_months)
                    next_cleanup = time.monotonic() + 24 * 3600
                wait = self.start_due()
            except OSError as exc:  # out of file descriptors, a full disk: wait, never die
                log.warning(
                    "spool %s: cannot scan (%s); trying again in %gs", self.spool, exc, RESCAN
                )
                wait = RESCAN
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), wait)
            self.wake.clear()


async def drain(
    spool: Spool,
    send: Send,
    policy: Delivery,
    stop: asyncio.Event,
    *,
    on_sent: Callable[[Message], None] | None = None,
) -> None:
    """Drain `spool` with `send` until `stop` (see Drain)."""
    await Drain(spool, send, policy, on_sent).run(stop)
