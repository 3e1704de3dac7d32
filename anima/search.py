"""Ranked keyword search over an agent's memory notes and conversation history.

The index is SQLite FTS5 (Porter stemming) in `.cache/index.sqlite`: git-ignored, rebuilt from
the files at any time (`anima memory reindex`), and brought up to date incrementally before
each search by comparing file sizes and mtimes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from anima import gitstore
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


SCHEMA = 4
ROOTS = ("memory", "history")


def _connect(agent_dir: Path) -> sqlite3.Connection:
    path = agent_dir / INDEX
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=10)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA:
        db.executescript(f"""
            DROP TABLE IF EXISTS files; DROP TABLE IF EXISTS docs; DROP TABLE IF EXISTS rows;
            PRAGMA user_version = {SCHEMA};
        """)
    db.executescript("""
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
        CREATE TABLE IF NOT EXISTS rows (path TEXT, id INTEGER);
        CREATE INDEX IF NOT EXISTS rows_path ON rows (path);
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
    cut = len(str(agent_dir)) + 1
    for sub, suffix in (("memory", ".md"), ("history", ".jsonl")):
        stack = [str(agent_dir / sub)]
        while stack:
            try:
                entries = list(os.scandir(stack.pop()))
            except FileNotFoundError:
                continue
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.name.endswith(suffix) and e.is_file(follow_symlinks=False):
                    out[e.path[cut:]] = e.stat(follow_symlinks=False)
    return out


def _indexable(rel: str) -> bool:
    return (rel.startswith("memory/") and rel.endswith(".md")) or (
        rel.startswith("history/") and rel.endswith(".jsonl")
    )


def _forget(db: sqlite3.Connection, path: str) -> None:
    """Drop a file's documents (through `rows`: FTS5 cannot look up an unindexed column)."""
    db.execute("DELETE FROM docs WHERE rowid IN (SELECT id FROM rows WHERE path = ?)", (path,))
    db.execute("DELETE FROM rows WHERE path = ?", (path,))


def _known(db: sqlite3.Connection, paths: Iterable[str] | None = None) -> dict[str, tuple]:
    """What the index holds per file: (mtime_ns, size, tail)."""
    sql = "SELECT path, mtime_ns, size, tail FROM files"
    if paths is None:
        return {p: (m, z, t) for p, m, z, t in db.execute(sql)}
    rows = (db.execute(sql + " WHERE path = ?", (p,)).fetchone() for p in paths)
    return {r[0]: tuple(r[1:]) for r in rows if r is not None}


def _update(
    db: sqlite3.Connection,
    agent_dir: Path,
    current: dict[str, os.stat_result | None],
    known: dict[str, tuple],
) -> int:
    """(Re)index the files in `current` (None: the file is gone) whose size or mtime moved."""
    n = 0
    last = db.execute("SELECT rowid FROM docs ORDER BY rowid DESC LIMIT 1").fetchone()
    next_id = (last[0] if last else 0) + 1
    for p, st in current.items():
        row = known.get(p)
        if st is None:
            if row is not None:
                _forget(db, p)
                db.execute("DELETE FROM files WHERE path = ?", (p,))
                n += 1
            continue
        if row is not None and tuple(row[:2]) == (st.st_mtime_ns, st.st_size):
            continue
        start = 0
        if p.startswith("history/") and row is not None:
            old_size, old_tail = row[1], row[2]
            if st.st_size > old_size and _tail(agent_dir / p, old_size) == old_tail:
                start = old_size  # appended to: index only the new turns
        if not start and row is not None:
            _forget(db, p)
        docs = list(
            _memory_docs(agent_dir, p)
            if p.startswith("memory/")
            else _history_docs(agent_dir, p, start, st.st_size)
        )
        if docs:  # rowids chosen here, so both tables take their rows in one statement each
            ids = range(next_id, next_id + len(docs))
            next_id += len(docs)
            db.executemany(
                "INSERT INTO docs (rowid, path, kind, date, title, body) VALUES (?,?,?,?,?,?)",
                ((i, p, *d) for i, d in zip(ids, docs, strict=True)),
            )
            db.executemany("INSERT INTO rows VALUES (?, ?)", ((p, i) for i in ids))
        db.execute(
            "INSERT OR REPLACE INTO files VALUES (?,?,?,?)",
            (p, st.st_mtime_ns, st.st_size, _tail(agent_dir / p, st.st_size)),
        )
        n += 1
    return n


def _stat(path: Path) -> os.stat_result | None:
    """A regular file's stat; None for anything else. A FIFO named like a note would block the
    indexer forever, and a symlink could pull another agent's file into this one's index."""
    try:
        st = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st if stat.S_ISREG(st.st_mode) else None


@contextlib.contextmanager
def _open(agent_dir: Path) -> Iterator[sqlite3.Connection]:
    db = _connect(agent_dir)
    try:
        yield db
    finally:
        db.close()


def _refresh(db: sqlite3.Connection, agent_dir: Path, *, rebuild: bool = False) -> int:
    head = gitstore.head(agent_dir)
    with db:
        if rebuild:
            db.execute("DELETE FROM files")
            db.execute("DELETE FROM docs")
            db.execute("DELETE FROM rows")
        known = _known(db)
        current: dict[str, os.stat_result | None] = dict(_files(agent_dir))
        for p in known:
            current.setdefault(p, None)
        n = _update(db, agent_dir, current, known)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('head', ?)", (head,))
    return n


def _follow_git(db: sqlite3.Connection, agent_dir: Path, touched: Iterable[str]) -> int:
    head = gitstore.head(agent_dir)
    row = db.execute("SELECT value FROM meta WHERE key = 'head'").fetchone()
    changed = gitstore.changed_between(agent_dir, row[0], head, ROOTS) if row else None
    if changed is None:
        return _refresh(db, agent_dir)
    paths = {p for p in [*changed, *touched] if _indexable(p)}
    if not paths and row[0] == head:
        return 0
    with db:
        current = {p: _stat(agent_dir / p) for p in sorted(paths)}
        n = _update(db, agent_dir, current, _known(db, current))
        db.execute("INSERT OR REPLACE INTO meta VALUES ('head', ?)", (head,))
    return n


def refresh(agent_dir: Path, *, rebuild: bool = False) -> int:
    """Bring the index up to date by looking at every file; returns how many were (re)indexed."""
    with _open(agent_dir) as db:
        return _refresh(db, agent_dir, rebuild=rebuild)


def update(agent_dir: Path, touched: Iterable[str] = ()) -> int:
    """The fast refresh for a turn, when the working tree is HEAD plus `touched`: only the files
    that changed between the commit the index last saw and HEAD are looked at."""
    with _open(agent_dir) as db:
        return _follow_git(db, agent_dir, touched)


def fts_query(text: str) -> str:
    """Free text → an FTS5 query matching any of its meaningful words (ranked by bm25)."""
    return " OR ".join(_terms(text))


def _terms(text: str) -> list[str]:
    words = dict.fromkeys(w.lower() for w in _WORD.findall(text) if w.lower() not in STOP)
    return [f'"{w}"' for w in list(words)[:24]]


COMMON_CHECK_DOCS = 2000
"""From this many documents on, words in more than half of them are left out of a query."""


def _informative(db: sqlite3.Connection, terms: list[str]) -> list[str]:
    """`terms` without those in more than half the documents. bm25 gives such a word no weight
    (FTS5 floors its idf at ~0), yet ranking every document it matches is what made a search
    of 100k turns take 140 ms. Counting stops at half, so a common word costs ~2 ms to spot.
    If every word is that common, all are kept."""
    total = db.execute("SELECT count(*) FROM rows").fetchone()[0]
    if total < COMMON_CHECK_DOCS or len(terms) < 2:
        return terms
    half = total // 2
    sql = "SELECT count(*) FROM (SELECT rowid FROM docs WHERE docs MATCH ? LIMIT ?)"
    kept = [t for t in terms if db.execute(sql, (t, half + 1)).fetchone()[0] <= half]
    return kept or terms


def search(
    agent_dir: Path,
    query: str,
    *,
    limit: int = 5,
    kinds: tuple[str, ...] = ("memory", "history"),
    exclude_paths: tuple[str, ...] = (),
    exclude_conversation: str = "",
    refresh_first: bool = True,
    touched: Iterable[str] | None = None,
) -> list[Hit]:
    """The best `limit` hits for the words of `query` (any of them; bm25 ranks the rest).
    With `touched`, the index first follows git plus those paths (a turn's way); otherwise it
    stats every file first, unless `refresh_first` is off. One connection for all of it."""
    terms = _terms(query)
    if not terms:
        return []
    with _open(agent_dir) as db:
        if touched is not None:
            _follow_git(db, agent_dir, touched)
        elif refresh_first:
            _refresh(db, agent_dir)
        q = " OR ".join(_informative(db, terms))
        kind_marks = ",".join("?" * len(kinds))
        path_marks = ",".join("?" * len(exclude_paths))
        rows = db.execute(
            f"SELECT path, kind, date, title, snippet(docs, 4, '[', ']', '…', 16), bm25(docs) "
            f"FROM docs WHERE docs MATCH ? AND kind IN ({kind_marks}) "
            f"AND path NOT IN ({path_marks}) "
            "AND NOT (kind = 'history' AND title = ?) ORDER BY bm25(docs) LIMIT ?",
            (q, *kinds, *exclude_paths, exclude_conversation, limit),
        ).fetchall()
    return [Hit(p, k, d, t, s.replace("\n", " "), -score) for p, k, d, t, s, score in rows]
