"""Running agents. `run_once` handles what is pending now; `Runtime` is the always-on process
(DESIGN §6): one watcher for every inbox, a queue per agent, bounded concurrency across agents,
reminders, status, sd_notify, and a clean shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from functools import partial
from pathlib import Path
from typing import Any

from watchfiles import Change, awatch

from anima import gitstore, mailbox, router, schedule, status, stream, systemd
from anima.home import Home
from anima.message import iso, utcnow
from anima.turn import AgentRun, OnEvent, TurnResult, describe, log_failure, process_agent

log = logging.getLogger(__name__)

STATUS_EVERY = 5.0
MAX_RETRY_DELAY = 600.0
STALE_TMP_SECONDS = 3600
WRITER_RECHECK = 0.02
"""How soon a file a writer still holds open is looked at again."""
FULL_CHECK_EVERY = 3600.0


def run_once(
    home: Home, names: Sequence[str] | None = None, *, on_event: OnEvent | None = None
) -> list[TurnResult]:
    """One pass over the agents: a turn per pending conversation batch, then routing."""
    home.require()
    results: list[TurnResult] = []
    for name in names or home.agent_names():
        try:  # one agent's bad config or odd repository never stops the others
            run = process_agent(
                home, name, on_event=on_event, on_commit=partial(router.route_turn, home)
            )
            router.route_run(home, run)
        except Exception as exc:
            log_failure(name, exc)
            results.append(TurnResult(name, "", [], error=describe(exc)))
            continue
        results += run.results
        if run.paused:
            log.warning(
                "%s: %d self-started message(s) held: paused by its budget (anima resume %s)",
                name,
                len(run.paused),
                name,
            )
    return results


def _inbox_owner(path: str) -> str | None:
    p = Path(path)
    if p.parent.name != "inbox" or not p.name.endswith(".md") or p.name.startswith("."):
        return None
    return p.parent.parent.name


def clean_stale_tmp(home: Home, older_than: float = STALE_TMP_SECONDS) -> int:
    """Remove temp files a killed writer left behind (never a whole message: those are renamed)."""
    cutoff = time.time() - older_than
    removed = 0
    for tmp_dir in [*home.agents_dir.glob("*/inbox/.tmp"), *home.spool_dir.glob("*/tmp")]:
        for f in tmp_dir.iterdir():
            if f.is_file() and f.stat().st_mtime < cutoff:
                f.unlink(missing_ok=True)
                removed += 1
    return removed


class Workers(Executor):
    """The runtime's turn workers. Daemon threads, owned here: at shutdown a turn still stuck
    in a model call past the grace period is abandoned with the process (its write-ahead
    record rolls it back at the next start), so nothing has to force the exit."""

    def __init__(self, n: int, name: str = "anima-turn"):
        self._queue: queue.SimpleQueue[
            tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None
        ] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True) for i in range(n)
        ]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((future, partial(fn, **kwargs) if kwargs else fn, args))
        return future

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for t in self._threads:
                t.join()


class Runtime:
    """The always-on loop. Turns run in worker threads; everything else is on one event loop."""

    def __init__(self, home: Home, *, on_event: OnEvent | None = None, holder: str | None = None):
        from anima.stream import StreamWriter

        self.home = home.require()
        self.settings = home.config().runtime
        self.on_event = on_event or StreamWriter(home)  # live output for `anima chat`
        self.cancel = threading.Event()
        self.since = iso(utcnow())
        self.stopping = False
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.dirty: set[str] = set()
        self.failures: dict[str, int] = {}
        self.state: dict[str, dict[str, Any]] = {}
        self.turns = 0
        self.commits: dict[str, int] = {}
        self._sem = asyncio.Semaphore(self.settings.max_concurrent_turns)
        self._executor = Workers(self.settings.max_concurrent_turns + 1)
        self._rewatch = asyncio.Event()
        self._known: set[str] = set()
        self._lock = status.home_lock(home, holder or status.RUN_HOST)
        self._full_checked: dict[str, float] = {}
        self.on_ready: Callable[[], None] | None = None

    # -- scheduling -----------------------------------------------------------------------------
    def wake(self, name: str) -> None:
        """Queue a pass over `name`'s inbox; if one is running, run another right after it."""
        if self.stopping:
            return
        task = self.tasks.get(name)
        if task is not None and not task.done():
            self.dirty.add(name)
            return
        self.tasks[name] = asyncio.get_running_loop().create_task(self._work(name))

    def _process(self, name: str) -> AgentRun:
        # The full hand-edit check (git status over the whole repo) runs on an agent's first
        # pass and hourly; the others ask git only when a hand-editable path's mtime moved.
        now = time.monotonic()
        full = now - self._full_checked.get(name, -FULL_CHECK_EVERY) >= FULL_CHECK_EVERY
        run = process_agent(
            self.home,
            name,
            on_event=self.on_event,
            on_commit=partial(router.route_turn, self.home),
            settle=self.settings.settle_ms / 1000,
            cancel=self.cancel,
            full_check=full,
        )
        if full and not run.failed:
            self._full_checked[name] = now
        if not self.cancel.is_set():
            router.route_run(self.home, run)
        self._maintain(name, run)
        return run

    def _maintain(self, name: str, run: AgentRun) -> None:
        """Every `gc_every_turns` turns of an agent, pack its repository, under its lock (so
        recovery never meets our own gc's lock files), and say what it did."""
        before = self.commits.get(name, 0)
        after = self.commits[name] = before + sum(1 for r in run.results if r.commit)
        every = max(1, self.settings.gc_every_turns)
        if after // every == before // every or self.cancel.is_set():
            return
        lock = self.home.run_dir / "locks" / f"{name}.lock"
        try:
            with gitstore.agent_lock(lock, timeout=5):
                log.info("%s: %s", name, gitstore.gc(self.home.agents_dir / name))
        except Exception as exc:
            log.warning("%s: git gc failed: %s", name, exc)

    async def _work(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        while not self.stopping:
            self.dirty.discard(name)
            async with self._sem:
                if self.stopping:
                    return
                try:
                    run = await loop.run_in_executor(self._executor, self._process, name)
                except Exception as exc:  # a bug or an unreadable agent: log, back off, go on
                    log_failure(name, exc)  # as run_once does: one line, a traceback for bugs
                    run = AgentRun(name)
                    run.results.append(TurnResult(name, "", [], error=describe(exc)))
            self._after(name, run)
            if name not in self.dirty:
                return

    def _after(self, name: str, run: AgentRun) -> None:
        loop = asyncio.get_running_loop()
        st = self.state.setdefault(name, {})
        for r in run.results:
            if r.error:
                st["last_error"] = {
                    "at": iso(utcnow()),
                    "error": r.error,
                    "messages": r.message_ids,
                }
                if r.message_ids:
                    log.warning(
                        "%s: turn failed, %d message(s) stay pending: %s",
                        name,
                        len(r.message_ids),
                        r.error,
                    )
                else:  # before any turn (prepare): said once already, by the turn module
                    log.debug("%s: pass failed: %s", name, r.error)
            else:
                self.turns += 1
                st["last_turn"] = {"at": iso(utcnow()), "commit": r.commit, "ms": r.duration_ms}
                st.pop("last_error", None)  # a later turn succeeded: the error is history
                log.info(
                    "%s: turn %s (%d message(s), %s, %d ms)",
                    name,
                    (r.commit or "")[:8],
                    len(r.message_ids),
                    r.model,
                    r.duration_ms,
                )
        if run.failed:
            n = self.failures[name] = self.failures.get(name, 0) + 1
            delay = min(MAX_RETRY_DELAY, self.settings.retry_backoff * 2 ** (n - 1))
            loop.call_later(delay, self.wake, name)
        elif run.results:
            self.failures.pop(name, None)
        if run.unsettled:  # a writer still has a file open: look again soon; else at settle
            wait = (
                WRITER_RECHECK if run.writing == run.unsettled else self.settings.settle_ms / 1000
            )
            loop.call_later(wait, self.wake, name)

    # -- watching -------------------------------------------------------------------------------
    async def _watch(self) -> None:
        while not self.stopping:
            names = self.home.agent_names()
            new = set(names) - self._known
            self._known = set(names)
            inboxes = []
            for name in names:
                inbox = self.home.agents_dir / name / "inbox"
                inbox.mkdir(exist_ok=True)
                inboxes.append(inbox)
            for name in sorted(new):
                self.wake(name)  # pending since before we watched
            self._rewatch = asyncio.Event()
            # Only the inbox/ directories (not recursive): a whole repo is ~260 inotify watches.
            async for changes in awatch(
                self.home.agents_dir,
                *inboxes,
                recursive=False,
                step=self.settings.watch_step_ms,
                debounce=50,
                stop_event=self._rewatch,
                watch_filter=None,
                raise_interrupt=False,
            ):
                if any(Path(p).parent == self.home.agents_dir for _, p in changes):
                    self._rewatch.set()  # an agent came or went: watch the new set
                for change, path in changes:
                    if change != Change.deleted and (owner := _inbox_owner(path)):
                        self.wake(owner)

    async def _reminders(self) -> None:
        """Reminders and heartbeats, checked every second. Heartbeats are driven here whether
        or not a timer (or cron) also drives them: both deliver the same slot's id, so an agent
        gets one heartbeat per slot either way."""
        loop = asyncio.get_running_loop()
        while not self.stopping:
            for name in list(self._known):
                try:
                    await loop.run_in_executor(self._executor, self._wake_ups, name)
                except Exception as exc:
                    log.warning("%s: firing reminders or heartbeat failed: %s", name, exc)
            await asyncio.sleep(1.0)

    def _wake_ups(self, name: str) -> None:
        schedule.fire_due(self.home, name)
        if schedule.fire_heartbeat(self.home, name) is not None:
            log.info("%s: heartbeat", name)

    def _status_payload(self, live: bool = True) -> dict[str, Any]:
        agents = {}
        for name in sorted(self._known):
            inbox = self.home.agents_dir / name / "inbox"
            pending = sum(1 for _ in inbox.glob("*.md")) if inbox.is_dir() else 0
            agents[name] = {"pending": pending, **self.state.get(name, {})}
        return {
            "live": live,
            "pid": os.getpid(),
            "since": self.since,
            "updated": iso(utcnow()),
            "turns": self.turns,
            "agents": agents,
        }

    async def _status(self) -> None:
        interval = systemd.watchdog_interval()
        every = min(STATUS_EVERY, interval) if interval else STATUS_EVERY
        while not self.stopping:
            status.write(self.home, self._status_payload())
            if interval:
                systemd.notify("WATCHDOG=1")
            running = sum(1 for t in self.tasks.values() if not t.done())
            systemd.notify(f"STATUS={len(self._known)} agents, {running} busy, {self.turns} turns")
            await asyncio.sleep(every)

    # -- life cycle -----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> bool:
        """Run until `stop` is set. Returns True if every in-flight turn finished in time."""
        self._lock.acquire()
        mailbox.allow_leases()  # a renamed-in file is taken at once (main thread only)
        loop = asyncio.get_running_loop()
        try:
            clean_stale_tmp(self.home)
            stream.clean(self.home)
            for name in self.home.agent_names():
                # Route what a crash may have left committed but unrouted, fire missed reminders.
                await loop.run_in_executor(self._executor, router.route_pending, self.home, name)
                await loop.run_in_executor(self._executor, schedule.fire_due, self.home, name)
            workers = [
                loop.create_task(c) for c in (self._watch(), self._reminders(), self._status())
            ]
            systemd.notify("READY=1")
            if self.on_ready is not None:
                self.on_ready()
            log.info(
                "anima run: watching %d agents in %s", len(self.home.agent_names()), self.home.root
            )
            loop.run_in_executor(self._executor, self._warm_up)  # before the first message
            await stop.wait()
            return await self._shutdown(workers)
        finally:
            self._lock.release()
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _warm_up(self) -> None:
        """Load what a first turn would otherwise pay for (a provider SDK's import is over a
        second), in a worker right after start: the first turn costs what later ones do."""
        from anima import context
        from anima.agent import Agent
        from anima.config import load_agent_config
        from anima.llm.registry import warm_up
        from anima.message import Message
        from anima.tools import available

        t0 = time.monotonic()
        cfg = self.home.config()
        providers = set()
        for name in self.home.agent_names():
            try:
                agent_cfg = load_agent_config(self.home.agents_dir / name / "agent.toml")
                providers.add(warm_up(agent_cfg, cfg))
                # The context a first message would assemble: the search index, memory and
                # history caches (read-only but for the git-ignored index), and the toolset.
                agent = Agent.open(self.home, name)
                probe = Message.create(sender=agent_cfg.owner, to=name, body="warm-up")
                context.assemble(agent, [probe], probe.conversation)
                available(agent_cfg)
            except Exception as exc:  # a missing key shows up on the first turn, with context
                log.debug("%s: no warm-up: %s", name, exc)
        ms = (time.monotonic() - t0) * 1000
        log.info("anima run: warm (%s) in %.0f ms", ", ".join(sorted(providers)) or "-", ms)

    async def _shutdown(self, workers: list[asyncio.Task[None]]) -> bool:
        systemd.notify("STOPPING=1")
        self.stopping = True
        self._rewatch.set()
        for w in workers:
            w.cancel()
        busy = [t for t in self.tasks.values() if not t.done()]
        if busy:
            log.info(
                "shutting down: waiting up to %gs for %d turn(s)",
                self.settings.grace_seconds,
                len(busy),
            )
            _, still = await asyncio.wait(busy, timeout=self.settings.grace_seconds)
            if still:
                log.warning("abandoning %d turn(s): their messages stay pending", len(still))
                self.cancel.set()
                _, still = await asyncio.wait(still, timeout=1.0)
        else:
            still = set()
        status.write(self.home, self._status_payload(live=False))
        if still:
            log.warning("stopped: %d turn(s) abandoned; their messages stay pending", len(still))
        else:
            log.info("stopped")
        return not still
