"""Maildir-style delivery (DESIGN §4): atomic deliver, scan, reject with a reason, archive."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from anima.errors import BadMessage
from anima.fsutil import fsync_dir, write_atomic
from anima.message import Message, parse, render, utcnow

DELIVERED_AGE = 60.0
"""deliver() stamps the files it renames in this many seconds in the past: complete on arrival,
they pass the settle check that holds back files still being written in place."""
_SAFE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.md$")


@dataclass(frozen=True)
class Pending:
    """A parsed message waiting in an inbox."""

    path: Path
    message: Message


def month_of(msg_id: str) -> str:
    """archive/ and outbox/ are sharded by month, taken from the sortable id when it has one."""
    if len(msg_id) >= 6 and msg_id[:6].isdigit():
        return f"{msg_id[:4]}-{msg_id[4:6]}"
    return utcnow().strftime("%Y-%m")


def archive_path(agent_dir: Path, msg_id: str) -> Path:
    return agent_dir / "archive" / month_of(msg_id) / f"{msg_id}.md"


def outbox_path(agent_dir: Path, msg_id: str) -> Path:
    return agent_dir / "outbox" / month_of(msg_id) / f"{msg_id}.md"


def deliver(agent_dir: Path, msg: Message) -> Path | None:
    """Put `msg` into the agent's inbox atomically. Idempotent by id: returns None if it is
    already pending, archived or rejected there."""
    inbox = agent_dir / "inbox"
    target = inbox / f"{msg.id}.md"
    if (
        target.exists()
        or archive_path(agent_dir, msg.id).exists()
        or (inbox / "rejected" / target.name).exists()
    ):
        return None
    write_atomic(target, render(msg), tmp_dir=inbox / ".tmp", mtime=time.time() - DELIVERED_AGE)
    return target


@dataclass(frozen=True)
class Scan:
    pending: list[Pending]
    unsettled: int = 0
    """Files still being written in place (younger than the settle time): read them later."""


def scan(agent_dir: Path, name: str, *, settle: float = 0.0) -> Scan:
    """Parse every pending message, oldest id first. Bad files are rejected on the way.
    With `settle`, files modified less than `settle` seconds ago are left for a later scan
    (deliver() backdates the files it renames in, so they are never held back)."""
    inbox = agent_dir / "inbox"
    if not inbox.is_dir():
        return Scan([])
    pending = []
    unsettled = 0
    now = time.time()
    for entry in sorted(os.scandir(inbox), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        if settle and now - entry.stat(follow_symlinks=False).st_mtime < settle:
            unsettled += 1
            continue
        try:
            pending.append(Pending(path, read_message(path, name)))
        except BadMessage as exc:
            reject(path, str(exc))
    return Scan(pending, unsettled)


def read_message(path: Path, name: str) -> Message:
    if not _SAFE_FILE.match(path.name):
        raise BadMessage(
            f"file name {path.name!r} is not accepted: messages are NAME.md with letters, digits, "
            "'.', '_' or '-'"
        )
    if path.is_symlink() or not path.is_file():
        raise BadMessage("message is not a regular file (symlinks are refused)")
    stat = path.stat()
    with open(path, "rb") as fh:
        raw = fh.read(2 * 1024 * 1024)
    msg = parse(raw, fallback_id=path.stem, default_to=name, mtime=stat.st_mtime)
    if msg.id != path.stem:
        # The file name is the identity on disk; keep the front matter's id as extra information.
        msg = msg.with_(id=path.stem, extra={**msg.extra, "declared_id": msg.id})
    return msg


def reject(path: Path, reason: str, history: list[str] | None = None) -> Path:
    """Move a bad file to inbox/rejected/ and write <name>.error.md beside it. Never raises on
    an odd file name: the error note gets a safe name of its own."""
    rejected = path.parent / "rejected"
    rejected.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", path.name).lstrip(".") or "unnamed"
    target = rejected / safe
    n = 1
    while target.exists():
        target = rejected / f"{safe}.{n}"
        n += 1
    os.replace(path, target)
    note = [
        "---",
        f"file: {target.name}",
        f"original_name: {path.name!r}",
        f"rejected: {utcnow().isoformat()}",
        "---",
        f"Rejected: {reason}",
    ]
    if history:
        note += ["", "Earlier errors:", *[f"- {h}" for h in history]]
    write_atomic(rejected / f"{target.name}.error.md", "\n".join(note) + "\n")
    return target


def archive(agent_dir: Path, pending: Pending) -> Path:
    """Move a handled message from inbox/ to archive/YYYY-MM/ (renamed, so never half a file)."""
    target = archive_path(agent_dir, pending.message.id)
    target.parent.mkdir(parents=True, exist_ok=True)
    if pending.path.exists():
        os.replace(pending.path, target)
        fsync_dir(target.parent)
    return target
