"""run/status.json and `anima status`: is a runtime live, and how is each agent doing."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from contextlib import suppress
from pathlib import Path
from typing import Any

from anima import attempts, budget, gitstore, schedule, systemd, turnlog
from anima.config import Heartbeat, load_agent_config
from anima.errors import AnimaError, Busy
from anima.fsutil import write_atomic
from anima.home import Home


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


def _heartbeat_plan(home: Home, name: str, hb: Heartbeat) -> tuple[str | None, str | None]:
    """When the next heartbeat will really come, and what will deliver it: a promise only
    when something drives it (`anima run`, or an installed timer)."""
    if not (hb.every or hb.cron or hb.on_calendar):
        return None, None
    timer = systemd.timer_enabled(name)
    live = runtime_live(home)
    nxt = schedule.next_heartbeat(hb, dt.datetime.now(dt.UTC))
    if timer and (nxt is None or not live):
        return (nxt.isoformat() if nxt else "at the timer's next firing"), "systemd timer"
    if live and nxt is not None:
        return nxt.isoformat(), "anima run" + (" (and its systemd timer)" if timer else "")
    return None, "none: start `anima run`, or `anima units install` (or `anima cron`)"


def status_path(home: Home) -> Path:
    return home.run_dir / "status.json"


def agent_status(home: Home, name: str) -> dict[str, Any]:
    """What the files say about one agent, whether or not a runtime is live."""
    agent_dir = home.agents_dir / name
    inbox = agent_dir / "inbox"
    pending = sum(1 for p in inbox.glob("*.md")) if inbox.is_dir() else 0
    rejected = sum(1 for p in (inbox / "rejected").glob("*.error.md")) if inbox.is_dir() else 0
    last = gitstore.log(agent_dir, limit=1, grep=["^turn(", '^Revert "turn('])  # an undo counts
    info: dict[str, Any] = {
        "pending": pending,
        "rejected": rejected,
        "failing": attempts.failures(home, name),
        "last_turn": {
            "commit": last[0].short,
            "subject": last[0].subject,
            "at": last[0].date,
            "undone": last[0].subject.startswith("Revert"),
        }
        if last
        else None,
        "set_aside": len(turnlog.set_aside(agent_dir)),
        "git_busy": gitstore.operation_in_progress(agent_dir),
        "paused": budget.paused(home, name),
        "next_heartbeat": None,
        "next_reminder": None,
    }
    with suppress(AnimaError):
        hb = load_agent_config(agent_dir / "agent.toml").heartbeat
        info["next_heartbeat"], info["heartbeat_driver"] = _heartbeat_plan(home, name, hb)
    nxt = schedule.next_due(home, name, dt.datetime.now(dt.UTC))
    info["next_reminder"] = nxt.isoformat() if nxt else None
    return info


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
    for name in home.agent_names():
        info = agent_status(home, name)
        info["last_error"] = runtime_agents.get(name, {}).get("last_error")
        data["agents"][name] = info
    return data


def write(home: Home, payload: dict[str, Any]) -> None:
    write_atomic(status_path(home), json.dumps(payload, indent=1, default=str))
