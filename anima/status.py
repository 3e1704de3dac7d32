"""run/status.json and `anima status`: is a runtime live, and how is each agent doing."""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import json
import os
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anima import attempts, budget, gitstore, schedule, systemd, turnlog
from anima.config import Heartbeat, load_agent_config
from anima.errors import AnimaError, Busy
from anima.fsutil import write_atomic
from anima.home import RACY_SECONDS, Home


class ProcessLock:
    """Held by a long-running process for its whole life (an flock: it dies with the process),
    so that a second copy refuses to start."""

    def __init__(self, path: Path, what: str, home: Home):
        self.path = path
        self.what = what
        self.home = home
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Busy(busy_message(self.path, self.what, self.home)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n{self.what}".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


CHAT_HOST = "`anima chat` session"
"""The holder of the runtime lock when a chat runs the agents inside itself."""


def lock_holder(path: Path) -> tuple[str, str]:
    """(pid, what) written by the ProcessLock at `path`: who holds it."""
    try:
        pid, _, what = path.read_text(encoding="utf-8").partition("\n")
    except (FileNotFoundError, UnicodeDecodeError):
        return "?", ""
    return pid.strip() or "?", what.strip()


def busy_message(path: Path, what: str, home: Home) -> str:
    pid, holder = lock_holder(path)
    if holder == CHAT_HOST:
        return (
            f"an {CHAT_HOST} (pid {pid}) is running the agents of {home.root} inside itself: "
            "leave that chat (/quit or Ctrl-D) and start this again; a chat started later "
            "attaches to the runtime instead of hosting one"
        )
    return f"another {holder or what} is live for {home.root} (pid {pid})"


def live_holder(home: Home) -> str:
    """Who runs the agents now, for messages: "`anima run`, pid N" or a chat session."""
    pid, holder = lock_holder(home.run_dir / "anima.lock")
    return f"{holder or '`anima run`'}, pid {pid}"


def held(path: Path) -> bool:
    """Is the ProcessLock at `path` held by a live process?"""
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


RUN_HOST = "`anima run`"


def home_lock(home: Home, holder: str = RUN_HOST) -> ProcessLock:
    """The lock of the one runtime of a home: `anima run`, or a chat hosting one (CHAT_HOST)."""
    return ProcessLock(home.run_dir / "anima.lock", holder, home)


def runtime_live(home: Home) -> bool:
    return held(home.run_dir / "anima.lock")


def _heartbeat_plan(
    home: Home, name: str, hb: Heartbeat, live: bool
) -> tuple[str | None, str | None]:
    """When the next heartbeat will really come, and what will deliver it: a promise only
    when something drives it (`anima run`, or an installed timer)."""
    if not (hb.every or hb.cron or hb.on_calendar):
        return None, None
    timer = systemd.timer_enabled(name)
    nxt = schedule.next_heartbeat(hb, dt.datetime.now(dt.UTC))
    if timer and (nxt is None or not live):
        return (nxt.isoformat() if nxt else "at the timer's next firing"), "systemd timer"
    if live and nxt is not None:
        return nxt.isoformat(), "anima run" + (" (and its systemd timer)" if timer else "")
    return None, "none: start `anima run`, or `anima units install` (or `anima cron`)"


def status_path(home: Home) -> Path:
    return home.run_dir / "status.json"


def last_turn(agent_dir: Path) -> dict[str, Any] | None:
    """The agent's latest turn (an undo counts), from git."""
    last = gitstore.log(agent_dir, limit=1, grep=["^turn(", '^Revert "turn('])
    if not last:
        return None
    return {
        "commit": last[0].short,
        "subject": last[0].subject,
        "at": last[0].date,
        "undone": last[0].subject.startswith("Revert"),
    }


def _heartbeat(agent_dir: Path) -> Heartbeat | None:
    """The agent's heartbeat settings; None when its agent.toml cannot be read."""
    try:
        return load_agent_config(agent_dir / "agent.toml").heartbeat
    except AnimaError:
        return None


def _reflection_at(agent_dir: Path) -> str:
    """The agent's `[reflection] at`, "" when off or unreadable."""
    try:
        return load_agent_config(agent_dir / "agent.toml").reflection.at
    except AnimaError:
        return ""


@dataclass(frozen=True)
class Known:
    """What status would otherwise ask git and parse agent.toml for, per agent (the bulk of
    its cost): known_agents keeps it in run/status-cache.json while HEAD and agent.toml stand."""

    last_turn: dict[str, Any] | None
    heartbeat: Heartbeat | None
    live: bool
    reflection_at: str = ""


def _cache_path(home: Home) -> Path:
    return home.run_dir / "status-cache.json"


def _file_key(path: Path) -> list[int] | None:
    """A file's identity and version; None if missing or changed too recently to trust."""
    try:
        st = path.stat()
    except OSError:
        return None
    if time.time_ns() - st.st_mtime_ns < RACY_SECONDS * 1e9:
        return None
    return [st.st_mtime_ns, st.st_size, st.st_ino]


def known_agents(home: Home, names: list[str], *, live: bool, workers: int = 4) -> dict[str, Known]:
    """Known for each agent: from the cache where the agent's HEAD and agent.toml are as they
    were, else from git (in a few threads) and agent.toml, updating the cache."""
    try:
        kept = json.loads(_cache_path(home).read_text())
    except (OSError, ValueError):
        kept = {}
    kept = kept if isinstance(kept, dict) else {}
    entries: dict[str, dict[str, Any]] = {}
    heartbeats: dict[str, Heartbeat | None] = {}
    stale: list[str] = []
    for name in names:
        agent_dir = home.agents_dir / name
        old = kept.get(name)
        old = old if isinstance(old, dict) else {}
        entry: dict[str, Any] = {"config": _file_key(agent_dir / "agent.toml")}
        heartbeats[name] = hb = _heartbeat_of(agent_dir, entry["config"], old)
        entry["heartbeat"] = dataclasses.asdict(hb) if hb else None
        same = entry["config"] is not None and entry["config"] == old.get("config")
        kept_at = old.get("reflection") if same else None
        entry["reflection"] = kept_at if isinstance(kept_at, str) else _reflection_at(agent_dir)
        with suppress(AnimaError, OSError):
            entry["head"] = gitstore.head(agent_dir)
        if "head" in entry and old.get("head") == entry["head"] and "last_turn" in old:
            entry["last_turn"] = old["last_turn"]
        else:
            stale.append(name)
        entries[name] = entry
    if stale:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            for name, last in pool.map(lambda n: (n, last_turn(home.agents_dir / n)), stale):
                entries[name]["last_turn"] = last
    if entries != kept:
        with suppress(OSError):  # a read-only home still answers, more slowly
            write_atomic(_cache_path(home), json.dumps(entries), durable=False)
    return {
        n: Known(e["last_turn"], heartbeats[n], live, e["reflection"]) for n, e in entries.items()
    }


def _heartbeat_of(agent_dir: Path, key: list[int] | None, kept: dict[str, Any]) -> Heartbeat | None:
    """The heartbeat settings: from the cache entry `kept` while agent.toml's `key` stands."""
    if key is not None and key == kept.get("config") and "heartbeat" in kept:
        with suppress(TypeError):  # a cache another version of Anima wrote
            return Heartbeat(**kept["heartbeat"]) if kept["heartbeat"] else None
    return _heartbeat(agent_dir)


def agent_status(home: Home, name: str, known: Known | None = None) -> dict[str, Any]:
    """What the files say about one agent, whether or not a runtime is live (`known`: what
    known_agents found for it; by default asked of git and agent.toml now)."""
    agent_dir = home.agents_dir / name
    if known is None:
        known = Known(
            last_turn(agent_dir),
            _heartbeat(agent_dir),
            runtime_live(home),
            _reflection_at(agent_dir),
        )
    inbox = f"{agent_dir}/inbox"
    info: dict[str, Any] = {
        "pending": _count(inbox, ".md"),
        "rejected": _count(f"{inbox}/rejected", ".error.md"),
        "failing": attempts.failures(home, name),
        "last_turn": known.last_turn,
        "set_aside": len(turnlog.set_aside(agent_dir)),
        "git_busy": gitstore.operation_in_progress(agent_dir),
        "paused": budget.paused(home, name),
        "next_heartbeat": None,
        "next_reminder": None,
    }
    if known.heartbeat is not None:
        plan = _heartbeat_plan(home, name, known.heartbeat, known.live)
        info["next_heartbeat"], info["heartbeat_driver"] = plan
    now = dt.datetime.now(dt.UTC)
    nxt = schedule.next_due(home, name, now)
    info["next_reminder"] = nxt.isoformat() if nxt else None
    info["next_reflection"] = _next_reflection(known.reflection_at, now)
    from anima.lease import status_line  # pushes and the lease of an agent with a remote

    info["remote"] = status_line(home, name)
    return info


def _next_reflection(at: str, now: dt.datetime) -> str | None:
    """When the nightly reflection comes next (ISO, UTC); None when off or mistyped."""
    if not at:
        return None
    from anima import reflection
    from anima.config import Reflection

    try:
        when = reflection.next_slot(Reflection(at), now)
    except AnimaError:
        return None
    return when.isoformat() if when else None


def _count(folder: str, suffix: str) -> int:
    """Files in `folder` named *`suffix` (not hidden); 0 when there is no such folder."""
    try:
        with os.scandir(folder) as entries:
            return sum(1 for e in entries if e.name.endswith(suffix) and e.name[0] != ".")
    except (FileNotFoundError, NotADirectoryError):
        return 0


def collect(home: Home) -> dict[str, Any]:
    """Live state from the runtime's status.json where there is one, plus the agents' files."""
    data: dict[str, Any] = {"live": runtime_live(home), "pid": None, "since": None, "agents": {}}
    runtime_agents: dict[str, Any] = {}
    try:
        written = json.loads(status_path(home).read_text())
        if data["live"]:
            data["pid"], data["since"] = written.get("pid"), written.get("since")
        runtime_agents = written.get("agents", {})
    except (FileNotFoundError, json.JSONDecodeError):
        pass
    for name, known in known_agents(home, home.agent_names(), live=data["live"]).items():
        info = agent_status(home, name, known)
        info["last_error"] = runtime_agents.get(name, {}).get("last_error")
        data["agents"][name] = info
    return data


def write(home: Home, payload: dict[str, Any]) -> None:
    write_atomic(status_path(home), json.dumps(payload, indent=1, default=str))
