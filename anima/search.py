"""Ranked keyword search over an agent's memory notes and conversation history.

The index is SQLite FTS5 (Porter stemming) in `.cache/index.sqlite`: git-ignored, rebuilt from
the files at any time (`anima memory reindex`), and brought up to date incrementally before
each search by comparing file sizes and mtimes.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from anima.history import MESSAGE_BODY

INDEX = ".cache/index.sqlite"
_WORD = re.compile(r"[^\W_]{2,}", re.UNICODE)
_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")
STOP = frozenset(
    "the and for you are was what with that this have from your not but all can "
    "had her his him how its our out she who why will would there their them they "
    "about into than then when which while did does just".split()
)


@dataclass(frozen=True)
class Hit:
    path: str
    kind: str
    """memory | history"""
    date: str
    title: str
    snippet: str
    score: float


SCHEMA = 2


def _connect(agent_dir: Path) -> sqlite3.Connection:
    path = agent_dir / INDEX
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=10)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA:
        db.executescript(f"""
            DROP TABLE IF EXISTS files; DROP TABLE IF EXISTS docs;
            PRAGMA user_version = {SCHEMA};
        """)
    db.executescript("""
        CREATE TABLE IF NOT EXISTS files (
            path TEXT PRIMARY KEY, mtime_ns INTEGER, size INTEGER, tail BLOB);
        CREATE VIRTUAL TABLE IF NOT EXISTS docs USING fts5(
            path UNINDEXED, kind UNINDEXED, date UNINDEXED, title, body,
            tokenize = 'porter unicode61');
    """)
    return db


def _memory_docs(agent_dir: Path, rel: str) -> Iterator[tuple[str, str, str, str]]:
    text = (agent_dir / rel).read_text(encoding="utf-8", errors="replace")
    m = _DATE.search(rel)
    date = m.group(1) if m else ""
    yield "memory", date, rel.removeprefix("memory/"), text


def _tail(path: Path, size: int) -> bytes:
    """The last bytes before `size`: if they are unchanged, the file was only appended to."""
    with open(path, "rb") as f:
        f.seek(max(0, size - 64))
        return f.read(min(size, 64))


def _history_docs(
    agent_dir: Path, rel: str, start: int, end: int
) -> Iterator[tuple[str, str, str, str]]:
    """One document per turn: what was said and answered (tool plumbing left out). History
    files only grow by whole turns, so `start` can skip what an earlier pass indexed."""
    date = _DATE.search(rel)
    conversation = rel.split("/")[1]
    turns: dict[str, list[str]] = {}
    with open(agent_dir / rel, "rb") as f:
        f.seek(start)
        raw = f.read(end - start).decode("utf-8", errors="replace")
    for line in raw.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        parts = turns.setdefault(str(rec.get("turn", "")), [])
        for b in rec.get("content", []):
            if b.get("type") != "text":
                continue
            bodies = (
                [body for _, body in MESSAGE_BODY.findall(b["text"])]
                if rec.get("role") == "user"
                else [b["text"]]
            )
            parts += [x.strip() for x in bodies if x.strip()]
    for parts in turns.values():
        if parts:
            yield "history", date.group(1) if date else "", conversation, "\n".join(parts)


def _files(agent_dir: Path) -> dict[str, os.stat_result]:
    out = {}
    for sub, suffix in (("memory", ".md"), ("history", ".jsonl")):
        stack = [agent_dir / sub]
        while stack:
            try:
                entries = list(os.scandir(stack.pop()))
            except FileNotFoundError:
                continue
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
                elif e.name.endswith(suffix):
                    out[os.path.relpath(e.path, agent_dir)] = e.stat(follow_symlinks=False)
    return out


def refresh(agent_dir: Path, *, rebuild: bool = False) -> int:
    """Bring the index up to date with the files; returns how many files were (re)indexed."""
    db = _connect(agent_dir)
    try:
        with db:
            if rebuild:
                db.execute("DELETE FROM files")
                db.execute("DELETE FROM docs")
            known = {
                p: (m, s, t)
                for p, m, s, t in db.execute("SELECT path, mtime_ns, size, tail FROM files")
            }
            current = _files(agent_dir)
            changed = [
                p
                for p, st in current.items()
                if known.get(p, ())[:2] != (st.st_mtime_ns, st.st_size)
            ]
            gone = [p for p in known if p not in current]
            for p in gone:
                db.execute("DELETE FROM docs WHERE path = ?", (p,))
                db.execute("DELETE FROM files WHERE path = ?", (p,))
            for p in changed:
                st = current[p]
                start = 0
                if p.startswith("history/") and p in known:
                    old_size, old_tail = known[p][1], known[p][2]
                    if st.st_size > old_size and _tail(agent_dir / p, old_size) == old_tail:
                        start = old_size  # appended to: index only the new turns
                if not start:
                    db.execute("DELETE FROM docs WHERE path = ?", (p,))
                docs = (
                    _memory_docs(agent_dir, p)
                    if p.startswith("memory/")
                    else _history_docs(agent_dir, p, start, st.st_size)
                )
                db.executemany(
                    "INSERT INTO docs (path, kind, date, title, body) VALUES (?,?,?,?,?)",
                    [(p, *d) for d in docs],
                )
                db.execute(
                    "INSERT OR REPLACE INTO files VALUES (?,?,?,?)",
                    (p, st.st_mtime_ns, st.st_size, _tail(agent_dir / p, st.st_size)),
                )
        return len(changed) + len(gone)
    finally:
        db.close()


def fts_query(text: str) -> str:
    """Free text → an FTS5 query matching any of its meaningful words (ranked by bm25)."""
    words = dict.fromkeys(w.lower() for w in _WORD.findall(text) if w.lower() not in STOP)
    return " OR ".join(f'"{w}"' for w in list(words)[:24])


def search(
    agent_dir: Path,
    query: str,
    *,
    limit: int = 5,
    kinds: tuple[str, ...] = ("memory", "history"),
    exclude_paths: tuple[str, ...] = (),
    exclude_conversation: str = "",
    refresh_first: bool = True,
) -> list[Hit]:
    """The best `limit` hits for the words of `query` (any of them; bm25 ranks the rest)."""
    q = fts_query(query)
    if not q:
        return []
    if refresh_first:
        refresh(agent_dir)
    db = _connect(agent_dir)
    try:
        marks = ",".join("?" * len(kinds))
        rows = db.execute(
            f"SELECT path, kind, date, title, snippet(docs, 4, '[', ']', '…', 16), bm25(docs) "
            f"FROM docs WHERE docs MATCH ? AND kind IN ({marks}) "
            "AND NOT (kind = 'history' AND title = ?) ORDER BY bm25(docs) LIMIT ?",
            (q, *kinds, exclude_conversation, limit + len(exclude_paths) * 4),
        ).fetchall()
    finally:
        db.close()
    hits = [
        Hit(p, k, d, t, s.replace("\n", " "), -score)
        for p, k, d, t, s, score in rows
        if p not in exclude_paths
    ]
    return hits[:limit]
