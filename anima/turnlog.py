"""The turn's write-ahead record, so that a crash at any instant loses nothing (DESIGN §1.4).

While the model loop runs, the record says `running` and lists every path a tool is about to
write (a tool names the path before it touches it): a crash then means the turn never happened,
and recovery puts exactly those paths back as HEAD has them. Nothing else in the repository is
touched, so a person's uncommitted edits survive. Before any file of the result is written, the
whole result (outbox records, history lines, archive moves, commit message) is saved with
`committing`: a crash after that is finished by replaying the record, which is idempotent. A
record whose replay keeps failing is set aside after `MAX_REPLAYS` tries, its messages put back
in inbox/, so one bad turn never blocks the agent's later ones.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from anima import gitstore, history
from anima.fsutil import write_atomic
from anima.message import utcnow

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

    def paths(self) -> list[str]:
        paths = [dst for _, dst in self.archive] + [p for p, _ in self.outbox]
        paths += [self.history_path] if self.history_path else []
        paths += self.touched
        return sorted(set(paths))


class Journal(set[str]):
    """The paths a running turn's tools are about to write (relative to the agent directory).
    Each new path is saved in the turn record before the tool writes it, so an interrupted or
    abandoned turn undoes exactly these paths and nothing a person edited."""

    def __init__(self, agent_dir: Path, paths: Iterable[str] = ()):
        super().__init__(paths)
        self._dir = agent_dir

    def add(self, rel: str) -> None:
        if rel not in self:
            super().add(rel)
            _save_running(self._dir, sorted(self))

    def update(self, *others: Iterable[str]) -> None:
        for other in others:
            for rel in other:
                self.add(rel)


def _record_path(agent_dir: Path) -> Path:
    return agent_dir / ".git" / "anima-turn.json"


def _save_running(agent_dir: Path, paths: list[str]) -> None:
    # Not fsynced: it guards against a killed process; after a power loss the turn's own
    # unsynced edits are as likely gone as this marker.
    data = {"phase": "running", "pid": os.getpid(), "paths": paths}
    write_atomic(_record_path(agent_dir), json.dumps(data, ensure_ascii=False), durable=False)


def begin(agent_dir: Path) -> Journal:
    """Start a turn's record; tools add the paths they will write to the returned journal."""
    _save_running(agent_dir, [])
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
    data = _load(agent_dir)
    if data is None:
        return []
    if data.get("phase") == "committing":
        return _record_of(data).paths()
    paths = data.get("paths")
    return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []


def abandon(agent_dir: Path) -> list[str]:
    """The turn did not happen: put back what its tools wrote, keep its messages pending.
    Returns the paths put back."""
    restored = gitstore.rollback(agent_dir, claimed_paths(agent_dir))
    _record_path(agent_dir).unlink(missing_ok=True)
    return restored


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
    """Save the record, apply it and commit the turn; returns the commit sha."""
    data = {"phase": "committing", "record": asdict(rec), "replays": replays}
    write_atomic(_record_path(agent_dir), json.dumps(data, ensure_ascii=False))
    _apply(agent_dir, rec, replay=replay)
    sha = gitstore.commit(
        agent_dir,
        rec.subject,
        body=rec.body,
        trailers=rec.trailers,
        paths=rec.paths(),
        parent=rec.parent,
    )
    _record_path(agent_dir).unlink(missing_ok=True)
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
        restored = abandon(agent_dir)
        return Recovery(f"rolled back an interrupted turn ({len(restored)} path(s) put back)")
    rec = _record_of(data)
    if gitstore.head_has_record(agent_dir, rec.subject, rec.trailers):
        _record_path(agent_dir).unlink(missing_ok=True)  # the commit landed; cleanup cut short
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
    gitstore.rollback(agent_dir, [p for p in rec.paths() if p not in {d for _, d in rec.archive}])
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
