"""Failed attempts per message, so that a message that keeps failing is set aside with its error
history instead of being retried forever. Kept in run/ (runtime state, not in git)."""

from __future__ import annotations

import json
from pathlib import Path

from anima import mailbox
from anima.fsutil import write_atomic
from anima.home import Home
from anima.message import utcnow


def _path(home: Home, agent: str) -> Path:
    return home.run_dir / "attempts" / f"{agent}.json"


def load(home: Home, agent: str) -> dict[str, list[str]]:
    try:
        data = json.loads(_path(home, agent).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def record_failure(
    home: Home, agent: str, pendings: list[mailbox.Pending], error: str, max_attempts: int
) -> list[Path]:
    """Count a failed turn against each of its messages; reject those out of attempts.
    Returns the paths of the messages rejected now."""
    data = load(home, agent)
    rejected = []
    stamp = utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
    for p in pendings:
        history = [*data.get(p.message.id, []), f"{stamp} {error}"]
        if len(history) >= max_attempts and p.path.exists():
            mailbox.reject(p.path, f"failed {len(history)} times; giving up", history)
            rejected.append(p.path)
            data.pop(p.message.id, None)
        else:
            data[p.message.id] = history
    write_atomic(_path(home, agent), json.dumps(data, indent=1))
    return rejected


def note(home: Home, agent: str, ids: list[str], error: str) -> None:
    """Count a failure against messages that are pending again (a turn set aside), without
    rejecting any: the next failed turn does that if they are out of attempts."""
    data = load(home, agent)
    stamp = utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
    for i in ids:
        data[i] = [*data.get(i, []), f"{stamp} {error}"]
    write_atomic(_path(home, agent), json.dumps(data, indent=1))


def clear(home: Home, agent: str, ids: list[str]) -> None:
    data = load(home, agent)
    if any(i in data for i in ids):
        for i in ids:
            data.pop(i, None)
        write_atomic(_path(home, agent), json.dumps(data, indent=1))


def failures(home: Home, agent: str) -> int:
    return max((len(v) for v in load(home, agent).values()), default=0)
