"""The few writes the dashboard makes that no library function makes yet: a dead letter sent
back to its channel's spool, or set aside. (Pairing, sending and undo call the library.)"""

from __future__ import annotations

import contextlib
import os

from anima import router
from anima.errors import BadName
from anima.fsutil import fsync_dir
from anima.home import Home
from anima.message import valid_id


def _dead_letter(home: Home, channel: str, msg_id: str) -> os.PathLike[str]:
    if not (valid_id(channel) and valid_id(msg_id)):
        raise BadName("not a channel or message id")
    path = router.failed_path(home, channel, msg_id)
    if not path.is_file() or path.is_symlink():
        raise BadName(f"no dead letter {msg_id} in {channel}")
    return path


def retry_dead_letter(home: Home, channel: str, msg_id: str) -> None:
    """Back into spool/<channel>/new/ with a fresh retry schedule: the adapter sends it again."""
    path = router.failed_path(home, channel, msg_id)
    _dead_letter(home, channel, msg_id)
    new = home.spool_dir / channel / "new" / path.name
    new.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, new)
    fsync_dir(new.parent)
    for stale in (
        path.with_name(f"{msg_id}.error.md"),
        home.spool_dir / channel / "state" / f"{msg_id}.json",
    ):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def drop_dead_letter(home: Home, channel: str, msg_id: str) -> None:
    """Out of the list, kept in spool/<channel>/dropped/ with its reason (the agent's outbox
    keeps the record in git either way)."""
    path = router.failed_path(home, channel, msg_id)
    _dead_letter(home, channel, msg_id)
    dropped = home.spool_dir / channel / "dropped"
    dropped.mkdir(parents=True, exist_ok=True)
    note = path.with_name(f"{msg_id}.error.md")
    if note.exists():
        os.replace(note, dropped / note.name)
    os.replace(path, dropped / path.name)
    fsync_dir(dropped)
