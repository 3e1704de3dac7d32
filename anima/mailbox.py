"""Maildir-style delivery (DESIGN §4): atomic deliver, scan, reject with a reason, archive."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import signal
import stat
import time
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

from anima.errors import BadMessage, UnfinishedMessage
from anima.fsutil import fsync_dir, write_atomic
from anima.message import MAX_MESSAGE_BYTES, Message, parse, render, utcnow

log = logging.getLogger(__name__)

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


_TIME_ID = re.compile(r"^\d{8}T\d{9}Z")


def reply_to(
    agent_dir: Path, name: str, msg_id: str, skip: Container[str] = ()
) -> Message | None:
    """The record in the agent's outbox that answers message `msg_id`, if there is one yet
    (and is not in `skip`). Only the month of `msg_id` and this month are read, and in them only
    records from its millisecond on (ids of one millisecond may sort either way: a pinned clock
    gives every id the same time)."""
    outbox = agent_dir / "outbox"
    months = dict.fromkeys((month_of(msg_id), utcnow().strftime("%Y-%m")))
    since = msg_id[:19] if _TIME_ID.match(msg_id) else ""
    found = [p for m in months for p in (outbox / m).glob("*.md") if p.stem[:19] >= since]
    for path in sorted(found):
        if path.stem in skip:
            continue
        try:
            msg = read_message(path, name)
        except (BadMessage, OSError):
            continue
        if msg.in_reply_to == msg_id:
            return msg
    return None


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
    if inbox.is_dir():
        _clear_reserved(inbox)
    write_atomic(target, render(msg), tmp_dir=inbox / ".tmp", mtime=time.time() - DELIVERED_AGE)
    return target


@dataclass(frozen=True)
class Scan:
    pending: list[Pending]
    unsettled: int = 0
    """Files still being written in place (younger than the settle time): read them later."""
    writing: int = 0
    """Of those, files a process is known to hold open for writing: look again very soon."""


RESERVED = ("rejected", ".tmp")
"""The inbox's own folders: entries by these names that are not plain folders are moved aside."""


def scan(agent_dir: Path, name: str, *, settle: float = 0.0) -> Scan:
    """Parse every pending message, oldest id first. Whatever else sits in inbox/ (bad files,
    links, FIFOs, folders, ids already handled, files that make the parser fail) is rejected on
    the way, so one poison file never holds back the others. With `settle`, files modified less
    than `settle` seconds ago, or with a front matter not closed yet, are left for a later scan
    (deliver() backdates the files it renames in, so they are never held back)."""
    inbox = agent_dir / "inbox"
    if not inbox.is_dir():
        return Scan([])
    _clear_reserved(inbox)
    pending = []
    unsettled = writing = 0
    now = time.time()
    for entry in sorted(os.scandir(inbox), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name == "rejected":
            continue  # staging (.tmp), hidden files, and the rejected folder itself
        path = Path(entry.path)
        try:
            info = os.lstat(path)
            if settle and stat.S_ISREG(info.st_mode) and now - info.st_mtime < WRITER_PATIENCE:
                # Complete unless a writer still has it open (a file renamed in by the Maildir
                # contract is complete at once); where that cannot be told, a young file waits
                # out the settle time.
                held = being_written(path)
                if held or (held is None and now - info.st_mtime < settle):
                    unsettled += 1
                    writing += bool(held)
                    continue
            msg = _read_inbox(path, name)
            _check_new(agent_dir, msg)
        except FileNotFoundError:
            continue  # gone since the listing: nothing to take or reject
        except UnfinishedMessage as exc:
            if _younger(path, settle):
                unsettled += 1
            else:
                _reject_quietly(path, str(exc))
        except BadMessage as exc:
            _reject_quietly(path, str(exc))
        except Exception as exc:  # a bug or an OS error on one file must not stop the others
            log.warning("%s: cannot read %s", name, path.name, exc_info=True)
            _reject_quietly(path, f"cannot be read: {type(exc).__name__}: {_cut(str(exc))}")
        else:
            pending.append(Pending(path, msg))
    return Scan(pending, unsettled, writing)


WRITER_PATIENCE = 3600.0
"""A file a writer has kept open, untouched, for this long is taken anyway (a stuck writer)."""


def allow_leases() -> bool:
    """Let scan() ask the kernel whether a file is still open for writing (a read lease is
    refused while any writer holds it). Taking a lease means a writer opening the file in that
    instant sends us SIGIO, whose default action would end the process: so SIGIO is ignored
    first. Call from the main thread (signal handlers live there); elsewhere it stays off and
    the settle time decides. Returns whether leases are on."""
    if not hasattr(fcntl, "F_SETLEASE"):
        return False
    try:
        signal.signal(signal.SIGIO, signal.SIG_IGN)
    except ValueError:  # not the main thread
        return False
    return True


def being_written(path: Path) -> bool | None:
    """Whether some process holds `path` open for writing; None where that cannot be told
    (not Linux, SIGIO not ignored, a file of another user, a filesystem without leases).
    Leases are safe exactly while SIGIO is ignored, so that is the switch."""
    if not hasattr(fcntl, "F_SETLEASE") or signal.getsignal(signal.SIGIO) != signal.SIG_IGN:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        except OSError as exc:
            return True if exc.errno in (errno.EAGAIN, errno.EBUSY) else None
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


def _younger(path: Path, settle: float) -> bool:
    """Modified less than `settle` seconds ago (an unfinished file being written right now)."""
    try:
        return time.time() - os.lstat(path).st_mtime < settle
    except OSError:
        return False


def _cut(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _clear_reserved(inbox: Path) -> None:
    """inbox/rejected/ and inbox/.tmp/ must be real folders: a file, link or FIFO by either
    name would make every rejection or delivery fail. It is moved into rejected/ itself."""
    for reserved in RESERVED:
        path = inbox / reserved
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                continue
        except FileNotFoundError:
            continue
        aside = inbox / f".{reserved}.{os.urandom(4).hex()}.aside"  # hidden: no scan takes it
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            continue  # a delivery or scan in another process moved it first
        except OSError:
            log.warning("cannot move %s aside", path, exc_info=True)
            continue
        _reject_quietly(
            aside,
            f"an inbox entry may not be named {reserved!r}: the inbox keeps its own folder there",
            name=reserved,
        )


def _check_new(agent_dir: Path, msg: Message) -> None:
    """A message whose id was already handled would be answered twice, and archiving it would
    overwrite the original: refuse it."""
    done = archive_path(agent_dir, msg.id)
    if os.path.lexists(done):
        raise BadMessage(
            f"a message with id {msg.id!r} was already handled "
            f"({done.relative_to(agent_dir)}); give this one another name"
        )


def _read_inbox(path: Path, name: str) -> Message:
    """read_message for a file someone dropped: also no hard links, whose content belongs to
    another file (archiving one would carry another agent's file into this repository)."""
    return read_message(path, name, single_link=True)


def read_message(path: Path, name: str, *, single_link: bool = False) -> Message:
    """Read and parse one message file. Refuses, without opening or blocking, anything but a
    regular file: symlinks, FIFOs, sockets, devices, folders. Raises BadMessage."""
    if not _SAFE_FILE.match(path.name):
        raise BadMessage(
            f"file name {_cut(repr(path.name), 80)} is not accepted: messages are NAME.md with "
            "letters, digits, '.', '_' or '-'"
        )
    before = os.lstat(path)
    _check_kind(before)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BadMessage("message is not a regular file (symlinks are refused)") from exc
        raise
    try:
        info = os.fstat(fd)
        _check_kind(info)
        if (info.st_dev, info.st_ino) != (before.st_dev, before.st_ino):
            raise BadMessage("message file was replaced while it was read; it is read again later")
        if single_link and info.st_nlink > 1:
            raise BadMessage(
                f"message file has {info.st_nlink} hard links: it is another file's content, "
                "and is refused (copy it instead of linking it)"
            )
        if info.st_size > MAX_MESSAGE_BYTES:
            raise BadMessage(f"message is {info.st_size} bytes; the limit is {MAX_MESSAGE_BYTES}")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(MAX_MESSAGE_BYTES + 1)
        info = os.fstat(fd)
    finally:
        os.close(fd)
    if len(raw) > MAX_MESSAGE_BYTES:  # it grew while being read
        raise BadMessage(
            f"message is {max(info.st_size, len(raw))} bytes; the limit is {MAX_MESSAGE_BYTES}"
        )
    msg = parse(raw, fallback_id=path.stem, default_to=name, mtime=info.st_mtime)
    if msg.id != path.stem:
        # The file name is the identity on disk; keep the front matter's id as extra information.
        msg = msg.with_(id=path.stem, extra={**msg.extra, "declared_id": msg.id})
    return msg


_NOT_REGULAR = (
    (stat.S_ISLNK, "a symlink (symlinks are refused)"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
)


def _check_kind(info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        what = next((w for test, w in _NOT_REGULAR if test(info.st_mode)), "not a regular file")
        raise BadMessage(f"message is {what}; messages are regular Markdown files")


def _reject_quietly(path: Path, reason: str, *, name: str | None = None) -> None:
    """reject(), for scan, with a line in the log; a file that cannot even be moved aside is
    logged and left."""
    log.warning("%s: rejected inbox/%s: %s", path.parent.parent.name, path.name, _cut(reason, 200))
    try:
        reject(path, reason, name=name)
    except FileNotFoundError:
        pass  # taken away meanwhile
    except OSError:
        log.warning("cannot reject %s (%s)", path, reason, exc_info=True)


def reject(
    path: Path, reason: str, history: list[str] | None = None, *, name: str | None = None
) -> Path:
    """Move a bad file to inbox/rejected/ and write <name>.error.md beside it. Never raises on
    an odd file name: the error note gets a safe name of its own. Never overwrites an earlier
    rejection. `name` is the name to report, when the file was moved aside first."""
    original = name or path.name
    rejected = path.parent / "rejected"
    rejected.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", original).lstrip(".")[:200] or "unnamed"
    target = rejected / safe
    n = 1
    while os.path.lexists(target) or os.path.lexists(rejected / f"{target.name}.error.md"):
        target = rejected / f"{safe}.{n}"
        n += 1
    os.replace(path, target)
    note = [
        "---",
        f"file: {target.name}",
        f"original_name: {json.dumps(original)}",
        f"rejected: {utcnow().isoformat()}",
        "---",
        f"Rejected: {reason}",
    ]
    if history:
        note += ["", "Earlier errors:", *[f"- {h}" for h in history]]
    write_atomic(rejected / f"{target.name}.error.md", "\n".join(note) + "\n")
    return target


def archive(agent_dir: Path, pending: Pending) -> Path:
    """Move a handled message from inbox/ to archive/YYYY-MM/ (renamed, so never half a file).
    An archived original is never replaced: a second file by its id stays where it is."""
    target = archive_path(agent_dir, pending.message.id)
    target.parent.mkdir(parents=True, exist_ok=True)
    if pending.path.exists():
        if os.path.lexists(target):
            raise FileExistsError(f"{target} is already archived; scan() refuses such duplicates")
        os.replace(pending.path, target)
        fsync_dir(target.parent)
    return target
