"""Running agents. `run_once` handles what is pending now; `Runtime` is the always-on process
(DESIGN §6): one watcher for every inbox, a queue per agent, bounded concurrency across agents,
reminders, status, sd_notify, and a clean shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import importlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import Executor, Future
from functools import partial
from pathlib import Path
from typing import Any

from watchfiles import Change, awatch

from anima import (
    gitstore,
    mailbox,
    reflection,
    remotes,
    router,
    schedule,
    status,
    stream,
    systemd,
    turnlog,
)
from anima.home import Home
from anima.mcp_client import McpHub
from anima.message import iso, utcnow
from anima.toolset import DEFAULT_SOURCES, ToolSource, compose, open_sources
from anima.turn import AgentRun, OnEvent, TurnResult, describe, log_failure, process_agent

log = logging.getLogger(__name__)

STATUS_EVERY = 5.0
STATUS_REWRITE = 60.0
"""status.json is written when what it says changed, and at least this often."""
MAX_RETRY_DELAY = 600.0
STALE_TMP_SECONDS = 3600
WRITER_RECHECK = 0.02
"""How soon a file a writer still holds open is looked at again."""
FULL_CHECK_EVERY = 3600.0
SCHEDULE_RESCAN = 5.0
"""How often the runtime looks for a person's edits to heartbeats (agent.toml) and reminders
(reminders/): two stats per agent; the agent's own turns reschedule it at once."""
RETRY_SCHEDULE = 60.0
"""When working out an agent's next reminder or heartbeat failed: try again after this."""
MIN_TIMER = 0.25
"""Seconds: the soonest an agent's next reminder or heartbeat timer is set for."""
WARM_AGENTS = 8
"""Agents whose context (search index, memory and history caches) is loaded at start: the
most recently active; each other agent's first turn loads its own."""


SERVICES: tuple[str, ...] = ("anima.peer_drain:serve", "anima.remotes:serve")
"""What runs beside the watcher for the runtime's whole life, as "module:function": each is
called with (home, stop) and returns a coroutine that ends soon after `stop` is set (draining
the peer spools, pushing to git remotes). A service that fails is logged, never fatal."""


def _service(target: str) -> Callable[[Home, asyncio.Event], Coroutine[Any, Any, None]]:
    module, _, name = target.partition(":")
    fn = getattr(importlib.import_module(module), name)

    async def guarded(home: Home, stop: asyncio.Event) -> None:
        try:
            await fn(home, stop)
        except Exception:
            log.exception("runtime service %s failed; the runtime goes on without it", target)

    return guarded


def needs_pass(home: Home, name: str) -> bool:
    """Has a pass over `name` anything to do: a file in inbox/, a turn a crash cut short, or
    commits not routed yet? Cheap (a listing and two small reads, no git), so a start or
    `run --once` opens only those agents."""
    agent_dir = home.agents_dir / name
    try:
        with os.scandir(agent_dir / "inbox") as entries:
            if any(not e.name.startswith(".") and e.name not in mailbox.RESERVED for e in entries):
                return True
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError:  # unreadable: the pass says why
        return True
    return turnlog.in_progress(agent_dir) or router.behind(home, name)


def run_pass(
    home: Home,
    name: str,
    *,
    on_event: OnEvent | None = None,
    settle: float = 0.0,
    cancel: threading.Event | None = None,
    full_check: bool = True,
    sources: Sequence[ToolSource] = DEFAULT_SOURCES,
) -> AgentRun:
    """One pass over `name`: its turns, each routed as it commits, then whatever is still
    unrouted. The one place `run --once` and the runtime call process_agent. `sources` give
    the turns their tools (the caller keeps MCP servers alive across passes)."""
    run = process_agent(
        home,
        name,
        on_event=on_event,
        on_commit=partial(router.route_turn, home),
        settle=settle,
        cancel=cancel,
        full_check=full_check,
        sources=sources,
        may_run=remotes.may_run,  # another host holds its lease: messages stay pending
    )
    if (cancel is None or not cancel.is_set()) and not run.elsewhere:
        router.route_run(home, run)
    return run


def run_once(
    home: Home, names: Sequence[str] | None = None, *, on_event: OnEvent | None = None
) -> list[TurnResult]:
    """One pass over the agents named, or else over those with work (needs_pass): a turn per
    pending conversation batch, then routing; then what the runtime's services would do for
    them (push to their remotes, deliver to peers)."""
    home.require()
    results: list[TurnResult] = []
    ran: list[str] = []
    with open_sources(home) as sources:  # MCP servers start on first use, stop at the end
        for name in names or [n for n in home.agent_names() if needs_pass(home, n)]:
            ran.append(name)
            try:  # one agent's bad config or odd repository never stops the others
                run = run_pass(home, name, on_event=on_event, sources=sources)
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
    remotes.tend_once(home, ran)  # cron has no pusher running: push what was committed
    if home.config().peers:  # what the turns (or earlier ones) sent to other homes
        from anima import peer_drain

        try:
            peer_drain.once(home)
        except Exception as exc:  # a peer down is retried next time; never fails the pass
            log.warning("peers: delivery failed: %s", exc)
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


class Timers:
    """One heap of (when, agent) for every agent's reminders and heartbeats: the runtime sleeps
    until the earliest, whatever the number of agents. Setting an agent again supersedes its
    earlier entry, which is skipped when it comes up."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._when: dict[str, float] = {}

    def set(self, name: str, when: float | None) -> None:
        """Wake `name` at `when` (epoch seconds); None: nothing to wake it for."""
        if when is None:
            self._when.pop(name, None)
            return
        self._when[name] = when
        heapq.heappush(self._heap, (when, name))

    def drop(self, name: str) -> None:
        self._when.pop(name, None)

    def __contains__(self, name: str) -> bool:
        return name in self._when

    def _current(self) -> tuple[float, str] | None:
        while self._heap:
            when, name = self._heap[0]
            if self._when.get(name) == when:
                return when, name
            heapq.heappop(self._heap)  # superseded or dropped
        return None

    def next(self) -> float | None:
        top = self._current()
        return top[0] if top else None

    def due(self, now: float) -> list[str]:
        """Take the agents due at `now`."""
        names = []
        while (top := self._current()) is not None and top[0] <= now:
            heapq.heappop(self._heap)
            del self._when[top[1]]
            names.append(top[1])
        return names


def _schedule_stamp(agent_dir: Path, last: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """What a person's edit of the agent's heartbeat or reminders moves: the mtimes of the
    agent's folder, its agent.toml, and its reminders/ and each file in it. Taken for every
    agent every SCHEDULE_RESCAN seconds, so cheap: two stats when `last` (the stamp taken
    before) says there was no reminders/ and the folder's mtime says none was made since."""
    base = str(agent_dir)
    try:
        stamp = [os.stat(base).st_mtime_ns, os.stat(base + "/agent.toml").st_mtime_ns]
    except OSError:
        return ()
    if last is not None and len(last) == 2 and last[0] == stamp[0]:
        return tuple(stamp)
    with contextlib.suppress(OSError), os.scandir(base + "/reminders") as entries:
        stamp.append(os.stat(base + "/reminders").st_mtime_ns)
        stamp += sorted(e.stat().st_mtime_ns for e in entries)
    return tuple(stamp)


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
        """The agents, as of the watcher's last look at agents/ (it looks again on every
        change there): nothing per turn or per second lists agents/."""
        self._lock = status.home_lock(home, holder or status.RUN_HOST)
        self._full_checked: dict[str, float] = {}
        self._timers = Timers()
        self.mcp = McpHub(home)
        """One live session per MCP server, for the runtime's whole life."""
        self.sources: tuple[ToolSource, ...] = (*DEFAULT_SOURCES, self.mcp)
        self._timers_changed = asyncio.Event()
        self._stamps: dict[str, tuple[int, ...]] = {}
        self._pending: dict[str, int] = {}
        self._recount: set[str] = set()
        """Agents whose pending count in status.json may have changed since it was written."""
        self.on_ready: Callable[[], None] | None = None

    # -- scheduling -----------------------------------------------------------------------------
    def wake(self, name: str) -> None:
        """Queue a pass over `name`'s inbox; if one is running, run another right after it."""
        if self.stopping:
            return
        self._recount.add(name)
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
        run = run_pass(
            self.home,
            name,
            on_event=self.on_event,
            settle=self.settings.settle_ms / 1000,
            cancel=self.cancel,
            full_check=full,
            sources=self.sources,
        )
        if full and not run.failed:
            self._full_checked[name] = now
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
        self._recount.add(name)
        if any(r.commit for r in run.results):  # a turn may have set or retired a reminder
            self._reschedule(name)
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
        """One watcher over agents/ and every inbox/. An agent made, removed or renamed changes
        agents/: the agent list is read again and the watcher restarted on the new set."""
        loop = asyncio.get_running_loop()
        while not self.stopping:
            names = set(self.home.agent_names())
            for name in self._known - names:
                self._forget(name)
            for name in names - self._known:
                self._reschedule(name)
            self._known = names
            inboxes = []
            for name in sorted(names):
                inbox = self.home.agents_dir / name / "inbox"
                try:
                    inbox.mkdir(exist_ok=True)
                except OSError as exc:  # gone again, or unwritable: the next change says more
                    log.warning("%s: not watching its inbox: %s", name, exc)
                    continue
                inboxes.append(inbox)
            self._rewatch = asyncio.Event()
            # The sweep's first step runs once awatch below has made its watcher: whatever
            # landed while no watcher looked (before the start, or during a restart) is found.
            sweep = loop.create_task(self._sweep(sorted(names)))
            try:
                await self._watch_round(inboxes)
            except FileNotFoundError as exc:  # an inbox went away as the watcher started
                log.debug("watching again: %s", exc)
            await sweep

    async def _watch_round(self, inboxes: list[Path]) -> None:
        """Watch until an agent comes or goes (or the runtime stops), waking an agent for each
        file that lands in its inbox/."""
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

    async def _sweep(self, names: list[str]) -> None:
        """Once the watcher is up: if the agents changed while it started, watch again; wake
        the agents with work waiting (needs_pass). Off the event loop."""
        loop = asyncio.get_running_loop()
        home = self.home
        if await loop.run_in_executor(self._executor, home.agent_names) != names:
            self._rewatch.set()  # the next round sweeps again
            return
        waiting = await loop.run_in_executor(
            self._executor, lambda: [n for n in names if needs_pass(home, n)]
        )
        for name in waiting:
            if name in self._known:
                self.wake(name)

    def _forget(self, name: str) -> None:
        """An agent removed or renamed away: no timers, no status line."""
        self._timers.drop(name)
        self._stamps.pop(name, None)
        self._pending.pop(name, None)
        self.state.pop(name, None)

    # -- reminders and heartbeats ---------------------------------------------------------------
    def _reschedule(self, name: str) -> None:
        """Look at `name`'s reminders and heartbeat now (new agent, a turn, an edit)."""
        self._timers.set(name, time.time())
        self._timers_changed.set()

    async def _reminders(self) -> None:
        """Reminders and heartbeats, from one timer heap: the loop sleeps until the earliest is
        due, then fires what is due and sets each agent's next time. Heartbeats are driven here
        whether or not a timer (or cron) also drives them: both deliver the same slot's id, so
        an agent gets one heartbeat per slot either way."""
        loop = asyncio.get_running_loop()
        rescan_at = 0.0
        while not self.stopping:
            now = time.time()
            if now >= rescan_at:
                known = sorted(self._known)
                for name in await loop.run_in_executor(self._executor, self._edited, known):
                    self._timers.set(name, now)
                rescan_at = now + SCHEDULE_RESCAN
            if due := self._timers.due(now):
                fired = await loop.run_in_executor(self._executor, self._wake_ups, due)
                for name, when in fired.items():  # unless gone, or rescheduled meanwhile
                    if name in self._known and name not in self._timers:
                        self._timers.set(name, when)
                continue
            nxt = min(rescan_at, self._timers.next() or rescan_at)
            self._timers_changed.clear()
            try:
                await asyncio.wait_for(self._timers_changed.wait(), max(0.0, nxt - time.time()))
            except TimeoutError:
                pass

    def _edited(self, names: Iterable[str]) -> list[str]:
        """The agents whose heartbeat or reminders changed since last looked at (all of them,
        the first time)."""
        agents = self.home.agents_dir
        stamps = self._stamps
        return [n for n in names if stamps.get(n) != _schedule_stamp(agents / n, stamps.get(n))]

    def _wake_ups(self, names: Iterable[str]) -> dict[str, float | None]:
        """Deliver what is due for each agent; say when each is next due (epoch seconds)."""
        nxt: dict[str, float | None] = {}
        for name in names:
            self._stamps[name] = stamp = _schedule_stamp(self.home.agents_dir / name)
            if not stamp:  # removed or renamed since: the watcher forgets it
                nxt[name] = None
                continue
            now = utcnow()
            try:
                schedule.fire_due(self.home, name, now)
                if schedule.fire_heartbeat(self.home, name, now) is not None:
                    log.info("%s: heartbeat", name)
                if reflection.fire(self.home, name, now) is not None:
                    log.info("%s: reflection", name)
                when = schedule.next_wake(self.home, name, now)
                # Never sooner than MIN_TIMER from now: a time already past cannot spin.
                nxt[name] = max(when.timestamp(), time.time() + MIN_TIMER) if when else None
            except Exception as exc:
                log.warning("%s: firing reminders, heartbeat or reflection failed: %s", name, exc)
                nxt[name] = time.time() + RETRY_SCHEDULE
        return nxt

    # -- status ---------------------------------------------------------------------------------
    def _status_payload(self, live: bool = True) -> dict[str, Any]:
        for name in self._recount & self._known:  # only agents something happened to
            inbox = self.home.agents_dir / name / "inbox"
            self._pending[name] = sum(1 for _ in inbox.glob("*.md")) if inbox.is_dir() else 0
        self._recount.clear()
        agents = {
            name: {"pending": self._pending.get(name, 0), **self.state.get(name, {})}
            for name in sorted(self._known)
        }
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
        written: dict[str, Any] = {}
        written_at = 0.0
        while not self.stopping:
            payload = self._status_payload()
            same = {**payload, "updated": None} == {**written, "updated": None}
            if not same or time.monotonic() - written_at >= STATUS_REWRITE:
                status.write(self.home, payload)  # at 1,000 agents, ~100 kB and an fsync
                written, written_at = payload, time.monotonic()
            if interval:
                systemd.notify("WATCHDOG=1")
            running = sum(1 for t in self.tasks.values() if not t.done())
            systemd.notify(f"STATUS={len(self._known)} agents, {running} busy, {self.turns} turns")
            await asyncio.sleep(every)

    # -- life cycle -----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> bool:
        """Run until `stop` is set. Returns True if every in-flight turn finished in time.
        Ready at once: what start-up owes (messages that came while nothing ran, routing a
        crash left undone, missed reminders) is found by the watcher's first sweep and the
        first round of timers, in the background."""
        self._lock.acquire()
        mailbox.allow_leases()  # a renamed-in file is taken at once (main thread only)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._clean)
            self._known = set(self.home.agent_names())
            self._recount |= self._known
            for name in self._known:
                self._reschedule(name)
            services = [_service(target)(self.home, stop) for target in SERVICES]
            workers = [
                loop.create_task(c)
                for c in (self._watch(), self._reminders(), self._status(), *services)
            ]
            systemd.notify("READY=1")
            if self.on_ready is not None:
                self.on_ready()
            log.info("anima run: watching %d agents in %s", len(self._known), self.home.root)
            loop.run_in_executor(self._executor, self._warm_up)  # before the first message
            await stop.wait()
            return await self._shutdown(workers)
        finally:
            self._lock.release()
            self._executor.shutdown(wait=False, cancel_futures=True)
            self.mcp.close()

    def _clean(self) -> None:
        clean_stale_tmp(self.home)
        stream.clean(self.home)

    def _warm_up(self) -> None:
        """Load what a first turn would otherwise pay for (a provider SDK's import is over a
        second), in a worker right after start: every provider the agents use, and the
        context of the WARM_AGENTS most recently active agents."""
        from anima import context
        from anima.agent import Agent
        from anima.config import load_agent_config
        from anima.llm.registry import warm_up
        from anima.message import Message

        t0 = time.monotonic()
        cfg = self.home.config()
        providers: dict[tuple[str, str, tuple[str, ...]], str] = {}
        names = sorted(self._known)
        for name in names:
            try:
                agent_cfg = load_agent_config(self.home.agents_dir / name / "agent.toml")
                key = (agent_cfg.provider, agent_cfg.model, tuple(agent_cfg.fallback))
                if key not in providers:
                    providers[key] = warm_up(agent_cfg, cfg)
            except Exception as exc:  # a missing key shows up on the first turn, with context
                log.debug("%s: no warm-up: %s", name, exc)
        for name in sorted(names, key=self._last_active, reverse=True)[:WARM_AGENTS]:
            try:
                # The context a first message would assemble: the search index, memory and
                # history caches (read-only but for the git-ignored index), and the toolset
                # (its MCP servers started).
                agent = Agent.open(self.home, name)
                probe = Message.create(sender=agent.config.owner, to=name, body="warm-up")
                context.assemble(agent, [probe], probe.conversation)
                compose(agent, self.sources)
            except Exception as exc:
                log.debug("%s: no warm-up: %s", name, exc)
        ms = (time.monotonic() - t0) * 1000
        used = ", ".join(sorted(set(providers.values()))) or "-"
        log.info("anima run: warm (%s) in %.0f ms", used, ms)

    def _last_active(self, name: str) -> float:
        """When the agent's HEAD last moved (its reflog), 0 if unknown."""
        try:
            return (self.home.agents_dir / name / ".git" / "logs" / "HEAD").stat().st_mtime
        except OSError:
            return 0.0

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
