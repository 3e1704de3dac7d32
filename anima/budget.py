"""Budgets for the work an agent starts itself, so a confused or prompt-injected agent cannot
spend without limit.

Self-started work is a batch made only of heartbeats, reminders (channel `timer`) and messages
from other agents (channel `agent`). Only such turns count, against the `[autonomy]` budgets of
agent.toml over rolling windows; a person's message always runs and never counts (a batch with
one in it is a person's). When a budget is used up, self-started batches stay pending in inbox/
(no attempt counted) until `anima resume NAME`: a budget is a tripwire, not a rate limiter, so
the pause holds until a person has looked. The owner is told once, by a committed outbox note.

State is runtime state, not history: run/budgets/NAME.json holds the self-started turns of the
last day (time, tokens) and the pause, under an flock held for microseconds; reading it costs the
same on an agent with ten commits or ten thousand.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from anima import gitstore, mailbox, turnlog
from anima.agent import Agent
from anima.config import Autonomy
from anima.fsutil import write_atomic
from anima.home import Home
from anima.message import Message, iso, new_id, render, utcnow

log = logging.getLogger(__name__)

HOUR = 3600.0
DAY = 86400.0
SELF_STARTED_CHANNELS = ("timer", "agent")


def self_started(batch: Sequence[Message]) -> bool:
    """Did the agent (its timers, other agents) start this batch, rather than a person?"""
    return all(m.channel in SELF_STARTED_CHANNELS or m.kind != "message" for m in batch)


def _path(home: Home, name: str) -> Path:
    return home.run_dir / "budgets" / f"{name}.json"


@contextlib.contextmanager
def _update(home: Home, name: str) -> Iterator[dict[str, Any]]:
    """The agent's budget state to change, locked against `anima resume` in another process
    (and a runtime's pass in this one); saved on exit."""
    path = _path(home, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = _read(path)
        yield data
        # Not fsynced: a count lost to a power cut only lets one more turn through.
        write_atomic(path, json.dumps(data), durable=False)
    finally:
        os.close(fd)


def _read(path: Path) -> dict[str, Any]:
    """The saved state (written by rename: whole without the lock). A torn or hand-mangled file
    reads as empty: nothing used, not paused."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("turns", []), list):
        return {}
    return data


def _turns(data: dict[str, Any], now: float) -> list[tuple[float, int]]:
    """The self-started turns of the last day, as (time, tokens); anything malformed dropped."""
    turns = []
    for entry in data.get("turns", []):
        if (
            isinstance(entry, list)
            and len(entry) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in entry)
            and now - entry[0] < DAY
        ):
            turns.append((float(entry[0]), int(entry[1])))
    return turns


def _used(data: dict[str, Any], now: float) -> dict[str, int]:
    turns = _turns(data, now)
    return {
        "turns_per_hour": sum(1 for t, _ in turns if now - t < HOUR),
        "turns_per_day": len(turns),
        "tokens_per_day": sum(tokens for _, tokens in turns),
    }


def usage(home: Home, name: str) -> dict[str, int]:
    """Self-started turns in the last hour and day, and their tokens in the last day, keyed
    like the budgets they count against."""
    return _used(_read(_path(home, name)), utcnow().timestamp())


def _exhausted(limits: Autonomy, used: dict[str, int]) -> str | None:
    """Why self-started work must pause now, or None."""
    for key, window in (
        ("turns_per_hour", "self-started turns in the last hour"),
        ("turns_per_day", "self-started turns in the last 24 hours"),
        ("tokens_per_day", "tokens of self-started turns in the last 24 hours"),
    ):
        limit = getattr(limits, key)
        if limit and used[key] >= limit:
            return f"{key} = {limit} reached ({used[key]} {window})"
    return None


def _pause(data: dict[str, Any], limits: Autonomy, now: dt.datetime) -> dict[str, Any] | None:
    """The pause in force, or the one that starts now (set in `data`), or None."""
    pause = data.get("paused")
    if isinstance(pause, dict):
        return pause
    reason = _exhausted(limits, _used(data, now.timestamp()))
    if reason is None:
        return None
    pause = data["paused"] = {"since": iso(now), "reason": reason, "notice": new_id(now)}
    return pause


def admits(agent: Agent, batch: Sequence[Message]) -> bool:
    """May this batch run now? A person's always may. A self-started one may unless the agent
    is paused or its budget is used up, which pauses it and tells the owner (once)."""
    if not self_started(batch):
        return True
    limits = agent.config.autonomy  # a bad [autonomy] raises BadConfig: the agent's fault
    now = utcnow()
    if _pause(_read(_path(agent.home, agent.name)), limits, now) is None:
        return True  # the common case: one small read, no lock, no write
    with _update(agent.home, agent.name) as data:  # again, locked: a resume may just have run
        pause = _pause(data, limits, now)
    if pause is None:
        return True
    try:
        _tell_owner(agent, pause)
    except Exception as exc:  # told at the next pass instead: the note's id makes it once
        log.warning("%s: could not tell the owner about the pause: %s", agent.name, exc)
    return False


def _tell_owner(agent: Agent, paused: dict[str, Any]) -> None:
    """Commit a note to the owner (on the CLI, like what timer turns say), unless it is there.
    Call under the agent's lock. The write-ahead record makes a crash mid-way finish it."""
    notice = str(paused.get("notice") or "")
    if not notice or mailbox.outbox_path(agent.path, notice).exists():
        return
    note = Message(
        id=notice,
        sender=agent.name,
        to=agent.config.owner,
        body=(
            f"I have paused the work I start myself (heartbeats, reminders, messages from other "
            f"agents): {paused.get('reason')}. Those messages wait in my inbox; yours are still "
            f"answered. The budgets are [autonomy] in my agent.toml. To let me go on:\n\n"
            f"    anima resume {agent.name}\n"
        ),
        channel="cli",
        conversation="cli",
        created=str(paused.get("since") or iso(utcnow())),
    )
    log.warning("%s: self-started work paused: %s", agent.name, paused.get("reason"))
    rel = str(mailbox.outbox_path(agent.path, notice).relative_to(agent.path))
    record = turnlog.TurnRecord(
        subject=f"budget({agent.name}): self-started work paused",
        body=str(paused.get("reason") or ""),
        trailers=[("Anima-Message", notice)],
        archive=[],
        outbox=[(rel, render(note))],
        history_path="",
        history_records=[],
        parent=gitstore.head(agent.path),
    )
    turnlog.commit(agent.path, record)


def record(agent: Agent, batch: Sequence[Message], tokens: int) -> None:
    """Count a committed self-started turn. A count that cannot be saved is logged, not raised:
    the turn is committed, and its routing must still happen."""
    if not self_started(batch):
        return
    now = utcnow().timestamp()
    try:
        with _update(agent.home, agent.name) as data:
            data["turns"] = [[t, n] for t, n in _turns(data, now)] + [[round(now, 3), tokens]]
    except OSError as exc:
        log.warning("%s: could not count a self-started turn: %s", agent.name, exc)


def paused(home: Home, name: str) -> dict[str, Any] | None:
    """The pause in force ({"since", "reason"}), or None."""
    p = _read(_path(home, name)).get("paused")
    return {"since": p.get("since"), "reason": p.get("reason")} if isinstance(p, dict) else None


def resume(home: Home, name: str) -> dict[str, Any] | None:
    """Lift the pause and start the budgets afresh. Returns the pause lifted (None: there was
    none). Pokes a pending message so that a live runtime takes the held work at once."""
    if not isinstance(_read(_path(home, name)).get("paused"), dict):
        return None
    with _update(home, name) as data:
        was = data.pop("paused", None)
        data["turns"] = []
    if not isinstance(was, dict):
        return None  # lifted meanwhile by another resume
    _wake(home.agents_dir / name / "inbox")
    return {"since": was.get("since"), "reason": was.get("reason")}


def _wake(inbox: Path) -> None:
    """Re-stamp a pending file with its own times: the runtime's inbox watcher sees the change
    (inotify IN_ATTRIB), while the settle check, which reads mtime, sees nothing new."""
    for path in sorted(inbox.glob("*.md")):
        with contextlib.suppress(OSError):
            info = os.stat(path, follow_symlinks=False)
            os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)
            return
