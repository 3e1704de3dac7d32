"""The turn's write-ahead record, so that a crash at any instant loses nothing (DESIGN §1.4).

While the model loop runs, the record says `running`: a crash then means the turn never
happened, and recovery throws its uncommitted edits away (its messages are still in inbox/).
Before any file of the result is written, the whole result (outbox records, history lines,
archive moves, commit message) is saved with `committing`: a crash after that is finished by
replaying the record, which is idempotent, and committing.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from anima import gitstore, history
from anima.fsutil import write_atomic


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

    def paths(self) -> list[str]:
        paths = [dst for _, dst in self.archive] + [p for p, _ in self.outbox]
        paths += [self.history_path] if self.history_path else []
        paths += self.touched
        return sorted(set(paths))


def _record_path(agent_dir: Path) -> Path:
    return agent_dir / ".git" / "anima-turn.json"


def begin(agent_dir: Path) -> None:
    # Not fsynced: it guards against a killed process; after a power loss the turn's own
    # unsynced edits are as likely gone as this marker.
    write_atomic(
        _record_path(agent_dir),
        json.dumps({"phase": "running", "pid": os.getpid()}),
        durable=False,
    )


def abandon(agent_dir: Path) -> None:
    """The turn did not happen: drop its uncommitted edits, keep its messages pending."""
    gitstore.rollback(agent_dir)
    _record_path(agent_dir).unlink(missing_ok=True)


def _apply(agent_dir: Path, rec: TurnRecord, *, replay: bool) -> None:
    for rel, text in rec.outbox:
        write_atomic(agent_dir / rel, text)
    if rec.history_path:
        _append_history(agent_dir, rec, replay=replay)
    for src, dst in rec.archive:
        s, d = agent_dir / src, agent_dir / dst
        if s.exists():
            d.parent.mkdir(parents=True, exist_ok=True)
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


def commit(agent_dir: Path, rec: TurnRecord, *, replay: bool = False) -> str:
    """Save the record, apply it and commit the turn; returns the commit sha."""
    data = {"phase": "committing", "record": asdict(rec)}
    write_atomic(_record_path(agent_dir), json.dumps(data, ensure_ascii=False))
    _apply(agent_dir, rec, replay=replay)
    sha = gitstore.commit(
        agent_dir, rec.subject, body=rec.body, trailers=rec.trailers, paths=rec.paths()
    )
    _record_path(agent_dir).unlink(missing_ok=True)
    return sha


def recover(agent_dir: Path) -> str | None:
    """Finish or undo a turn a crash interrupted. Call under the agent lock before anything else.
    Returns what was done, for the log."""
    gitstore.recover(agent_dir)
    path = _record_path(agent_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, OSError):
        data = {"phase": "running"}  # torn record: nothing of the result was written yet
    if data.get("phase") != "committing":
        abandon(agent_dir)
        return "rolled back an interrupted turn"
    raw = data["record"]
    rec = TurnRecord(
        subject=raw["subject"],
        body=raw["body"],
        trailers=[tuple(t) for t in raw["trailers"]],  # type: ignore[misc]
        archive=[tuple(a) for a in raw["archive"]],  # type: ignore[misc]
        outbox=[tuple(o) for o in raw["outbox"]],  # type: ignore[misc]
        history_path=raw["history_path"],
        history_records=raw["history_records"],
        touched=raw.get("touched", []),
    )
    if gitstore.head_has_record(agent_dir, rec.subject, rec.trailers):
        path.unlink(missing_ok=True)  # the commit landed; only the cleanup was cut short
        return "turn was already committed"
    commit(agent_dir, rec, replay=True)
    return "finished an interrupted turn commit"
