"""The turn's write-ahead record, so that a crash at any instant loses nothing (DESIGN §1.4).

While the model loop runs, the record says `running` and lists every path a tool is about to
write, with what the path held just before (a tool names the path before it touches it: a copy
of a file, "absent", or a snapshot tree for a directory the shell works in). A crash then means
the turn never happened, and recovery puts exactly those paths back as they were, not as HEAD
has them, so a git-ignored file the turn edited is restored, not deleted. What is discarded is
first kept on `refs/anima/abandoned/…`. Nothing else in the repository is touched, so a person's
uncommitted edits survive. Before any file of the result is written, the
whole result (outbox records, history lines, archive moves, commit message) is saved with
`committing`: a crash after that is finished by replaying the record, which is idempotent. A
record whose replay keeps failing is set aside after `MAX_REPLAYS` tries, its messages put back
in inbox/, so one bad turn never blocks the agent's later ones.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from anima import gitstore, history, mailbox
from anima.fsutil import write_atomic
from anima.message import Message, render, utcnow

if TYPE_CHECKING:
    from anima.mailbox import Pending

log = logging.getLogger(__name__)

MAX_REPLAYS = 3
SET_ASIDE = "anima-set-aside"
"""Under .git/: records set aside, one JSON file each, for `anima status` and `anima doctor`."""


@dataclass
class TurnRecord:
    subject: str
    body: str
    trailers: list[tuple[str, str]]
    archive: list[tuple[str, str]]
    """(inbox path, archive path), relative to the agent directory."""
    outbox: list[tuple[str, str]]
    """(outbox path, rendered message)."""
    history_path: str
    history_records: list[dict[str, object]]
    touched: list[str] = field(default_factory=list)
    parent: str | None = None
    """HEAD when the turn started: the commit compares-and-swaps against it."""

    @classmethod
    def of_batch(
        cls,
        agent_dir: Path,
        pendings: Sequence[Pending],
        outgoing: Sequence[Message],
        *,
        subject: str,
        body: str,
        trailers: list[tuple[str, str]],
        conversation: str,
        records: list[dict[str, object]],
        touched: Sequence[str] = (),
        parent: str | None = None,
    ) -> TurnRecord:
        """The record of a turn that answers `pendings` with `outgoing`: the messages archived,
        the replies in outbox/, `records` appended to today's history day file."""

        def rel(path: Path) -> str:
            return str(path.relative_to(agent_dir))

        return cls(
            subject=subject,
            body=body,
            trailers=trailers,
            archive=[
                (rel(p.path), rel(mailbox.archive_path(agent_dir, p.message.id))) for p in pendings
            ],
            outbox=[(rel(mailbox.outbox_path(agent_dir, m.id)), render(m)) for m in outgoing],
            history_path=rel(
                history.day_file(agent_dir, conversation, utcnow().strftime("%Y-%m-%d"))
            ),
            history_records=records,
            touched=list(touched),
            parent=parent,
        )

    def paths(self) -> list[str]:
        paths = [dst for _, dst in self.archive] + [p for p, _ in self.outbox]
        paths += [self.history_path] if self.history_path else []
        paths += self.touched
        return sorted(set(paths))


class Journal(set[str]):
    """The paths a running turn's tools are about to write (relative to the agent directory).
    Each new path and its pre-image are saved in the turn record before the tool writes it, so
    an interrupted or abandoned turn undoes exactly these paths and nothing a person edited."""

    def __init__(self, agent_dir: Path, paths: Iterable[str] = ()):
        super().__init__(paths)
        self._dir = agent_dir
        self.pre: dict[str, dict[str, str]] = {}

    def add(self, rel: str) -> None:
        if rel not in self:
            self.pre[rel] = _preimage(self._dir, rel, len(self.pre))
            super().add(rel)
            _save_running(self._dir, sorted(self), self.pre)

    def update(self, *others: Iterable[str]) -> None:
        for other in others:
            for rel in other:
                self.add(rel)


def in_progress(agent_dir: Path) -> bool:
    """Whether a turn's record is on disk: a turn running, or one a crash cut short."""
    return _record_path(agent_dir).exists()


def _record_path(agent_dir: Path) -> Path:
    return agent_dir / ".git" / "anima-turn.json"


def _copies(agent_dir: Path) -> Path:
    return agent_dir / ".git" / "anima-turn"


def _preimage(agent_dir: Path, rel: str, n: int) -> dict[str, str]:
    """What `rel` holds before a tool writes it, kept where rollback can find it."""
    target = agent_dir / rel
    if target.is_symlink():
        return {"kind": "symlink", "target": os.readlink(target)}
    if target.is_dir():
        return {"kind": "tree", "tree": gitstore.snapshot(agent_dir, [rel])}
    if not target.exists():
        return {"kind": "absent"}
    if not target.is_file():
        return {"kind": "other"}  # a FIFO or a device: never ours to touch
    copy = _copies(agent_dir) / str(n)
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(target, copy)  # contents and mode
    return {"kind": "file", "copy": copy.name}


def _put_back(agent_dir: Path, rel: str, pre: dict[str, str]) -> None:
    target = agent_dir / rel
    kind = pre.get("kind")
    if kind == "tree":
        gitstore.restore(agent_dir, rel, pre["tree"])
        return
    if kind == "other":
        return
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir() and kind != "absent":
        shutil.rmtree(target)
    if kind == "file":
        shutil.copy2(_copies(agent_dir) / pre["copy"], target)
    elif kind == "symlink":
        os.symlink(pre["target"], target)


def _save_running(agent_dir: Path, paths: list[str], pre: dict[str, dict[str, str]]) -> None:
    # Not fsynced: it guards against a killed process; after a power loss the turn's own
    # unsynced edits are as likely gone as this marker.
    data = {"phase": "running", "pid": os.getpid(), "paths": paths, "pre": pre}
    write_atomic(_record_path(agent_dir), json.dumps(data, ensure_ascii=False), durable=False)


def begin(agent_dir: Path) -> Journal:
    """Start a turn's record; tools add the paths they will write to the returned journal."""
    shutil.rmtree(_copies(agent_dir), ignore_errors=True)
    _save_running(agent_dir, [], {})
    return Journal(agent_dir)


def _load(agent_dir: Path) -> dict[str, object] | None:
    try:
        data = json.loads(_record_path(agent_dir).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        return {"phase": "running", "paths": []}  # torn record: nothing of the result written
    return data if isinstance(data, dict) else {"phase": "running", "paths": []}


def claimed_paths(agent_dir: Path) -> list[str]:
    """The paths an interrupted turn wrote or was writing: not a person's hand edits."""
    return _claimed(_load(agent_dir))


def _claimed(data: dict[str, object] | None) -> list[str]:
    if data is None:
        return []
    if data.get("phase") == "committing":
        return _record_of(data).paths()
    paths = data.get("paths")
    return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []


def _pre_of(data: dict[str, object] | None) -> dict[str, dict[str, str]]:
    pre = data.get("pre") if data else None
    return pre if isinstance(pre, dict) else {}


def undo_paths(agent_dir: Path, paths: Sequence[str], pre: dict[str, dict[str, str]]) -> str:
    """Put `paths` back: to their pre-image where the record has one, else as HEAD has them
    (the files only the runtime writes). What is discarded is first kept on a side ref."""
    if not paths:
        return ""
    kept = gitstore.save_aside(agent_dir, paths, "abandoned: what an undone turn had written")
    for rel in paths:
        if rel in pre:
            _put_back(agent_dir, rel, pre[rel])
    gitstore.rollback(agent_dir, [p for p in paths if p not in pre])
    shutil.rmtree(_copies(agent_dir), ignore_errors=True)
    return f"; what it had written is kept as {kept}" if kept else ""


def abandon(agent_dir: Path) -> str:
    """The turn did not happen: put back what its tools wrote, keep its messages pending.
    Returns a note for the log."""
    data = _load(agent_dir)
    paths = _claimed(data)
    kept = undo_paths(agent_dir, paths, _pre_of(data))
    _record_path(agent_dir).unlink(missing_ok=True)
    return f"{len(paths)} path(s) put back{kept}"


def _apply(agent_dir: Path, rec: TurnRecord, *, replay: bool) -> None:
    for rel, text in rec.outbox:
        write_atomic(agent_dir / rel, text)
    if rec.history_path:
        _append_history(agent_dir, rec, replay=replay)
    for src, dst in rec.archive:
        s, d = agent_dir / src, agent_dir / dst
        if s.exists() and not d.exists():  # never over an archived original (intake rejects
            d.parent.mkdir(parents=True, exist_ok=True)  # such a duplicate at its next scan)
            os.replace(s, d)


def _append_history(agent_dir: Path, rec: TurnRecord, *, replay: bool) -> None:
    hist = agent_dir / rec.history_path
    # Appending is not idempotent: when replaying, restore the file to HEAD first.
    if replay and hist.exists():
        try:
            committed = gitstore.file_at_head(agent_dir, rec.history_path)
        except KeyError:
            hist.unlink()
        else:
            write_atomic(hist, committed)
    history.append(hist, rec.history_records)


def commit(agent_dir: Path, rec: TurnRecord, *, replay: bool = False, replays: int = 0) -> str:
    """Save the record, apply it and commit the turn; returns the commit sha. The record keeps
    the tools' pre-images (for a set-aside) and, before HEAD moves, the commit's own sha."""
    data: dict[str, object] = {
        "phase": "committing",
        "record": asdict(rec),
        "replays": replays,
        "pre": _pre_of(_load(agent_dir)),
    }
    write_atomic(_record_path(agent_dir), json.dumps(data, ensure_ascii=False))
    _apply(agent_dir, rec, replay=replay)

    def remember(sha: str) -> None:  # a kill, not a power cut, is what it guards against
        data["commit"] = sha
        write_atomic(_record_path(agent_dir), json.dumps(data, ensure_ascii=False), durable=False)

    sha = gitstore.commit(
        agent_dir,
        rec.subject,
        body=rec.body,
        trailers=rec.trailers,
        paths=rec.paths(),
        parent=rec.parent,
        on_object=remember,
    )
    _record_path(agent_dir).unlink(missing_ok=True)
    shutil.rmtree(_copies(agent_dir), ignore_errors=True)
    return sha


def _record_of(data: dict[str, object]) -> TurnRecord:
    raw = data["record"]
    assert isinstance(raw, dict)
    return TurnRecord(
        subject=raw["subject"],
        body=raw["body"],
        trailers=[tuple(t) for t in raw["trailers"]],
        archive=[tuple(a) for a in raw["archive"]],
        outbox=[tuple(o) for o in raw["outbox"]],
        history_path=raw["history_path"],
        history_records=raw["history_records"],
        touched=raw.get("touched", []),
        parent=None,  # a replay commits on whatever HEAD is now
    )


@dataclass(frozen=True)
class Recovery:
    """What recovery did with an interrupted turn."""

    note: str
    set_aside: list[str] = field(default_factory=list)
    """Message ids put back in inbox/ because their turn's record could not be committed."""


def recover(agent_dir: Path) -> Recovery | None:
    """Finish or undo a turn a crash interrupted. Call under the agent lock, after hand edits
    were committed (`claimed_paths` tells which paths are not a person's)."""
    data = _load(agent_dir)
    if data is None:
        return None
    gitstore.recover(agent_dir)  # a git killed with the turn left its locks
    if data.get("phase") != "committing":
        return Recovery(f"rolled back an interrupted turn ({abandon(agent_dir)})")
    rec = _record_of(data)
    sha = data.get("commit")
    if (isinstance(sha, str) and gitstore.landed(agent_dir, sha)) or gitstore.head_has_record(
        agent_dir, rec.subject, rec.trailers
    ):
        _record_path(agent_dir).unlink(missing_ok=True)  # the commit landed; cleanup cut short
        shutil.rmtree(_copies(agent_dir), ignore_errors=True)
        return Recovery("turn was already committed")
    replays = int(data.get("replays", 0) or 0) + 1  # type: ignore[call-overload]
    if replays > MAX_REPLAYS:
        return _set_aside(agent_dir, data, rec, f"its commit failed {MAX_REPLAYS} times")
    data["replays"] = replays
    write_atomic(_record_path(agent_dir), json.dumps(data, ensure_ascii=False))
    commit(agent_dir, rec, replay=True, replays=replays)
    return Recovery("finished an interrupted turn commit")


def _set_aside(agent_dir: Path, data: dict[str, object], rec: TurnRecord, why: str) -> Recovery:
    """Give up on a record: its messages go back to inbox/, its uncommitted files are put back,
    and the record is kept under .git/anima-set-aside/ for a person to look at."""
    ids = []
    for src, dst in rec.archive:
        s, d = agent_dir / src, agent_dir / dst
        if d.exists() and not s.exists():
            os.replace(d, s)
        ids.append(s.stem)
    archived = {d for _, d in rec.archive}
    undo_paths(agent_dir, [p for p in rec.paths() if p not in archived], _pre_of(data))
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    data["set_aside"] = {"at": stamp, "why": why, "messages": ids}
    write_atomic(
        agent_dir / ".git" / SET_ASIDE / f"{stamp}.json", json.dumps(data, ensure_ascii=False)
    )
    _record_path(agent_dir).unlink(missing_ok=True)
    note = f"set aside a turn whose {why}; its {len(ids)} message(s) are pending again"
    return Recovery(note, ids)


def set_aside(agent_dir: Path) -> list[dict[str, object]]:
    """Records set aside (newest last), for status and doctor."""
    out = []
    for f in sorted((agent_dir / ".git" / SET_ASIDE).glob("*.json")):
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        info = data.get("set_aside") if isinstance(data, dict) else None
        if isinstance(info, dict):
            out.append({"file": str(f), **info})
    return out
