"""Memory files: the capped core (MEMORY.md), notes with descriptions, and their index."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from anima import front_matter
from anima.config import Budget

CORE = "MEMORY.md"
INDEX_LIMIT = 100
JOURNAL = "journal"
JOURNAL_DAYS_LISTED = 7
DESCRIPTION_CHARS = 300


def cap_for(relative: str, budget: Budget) -> int:
    return budget.memory_chars if relative == CORE else budget.note_chars


def _meta(path: Path) -> dict[str, object]:
    """A note's front matter, read as safely as a message's: a hostile or broken note has none."""
    return front_matter.read_meta(path)


def read_only(path: Path) -> bool:
    return path.exists() and bool(_meta(path).get("read_only"))


@dataclass(frozen=True)
class Core:
    text: str
    used: int
    limit: int

    @property
    def truncated(self) -> bool:
        return self.used > self.limit


def core(memory_dir: Path, budget: Budget) -> Core:
    try:
        text = (memory_dir / CORE).read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    return Core(text, len(text), budget.memory_chars)


@functools.lru_cache(maxsize=4096)
def _description(path: Path, mtime_ns: int, size: int) -> str:
    """A note's `description:` from its front matter (cached by mtime and size: a turn
    lists every note, and re-parsing YAML for each would cost more than the turn). One line,
    cut at DESCRIPTION_CHARS: a hundred notes are listed in every prompt."""
    value = _meta(path).get("description", "") or ""
    text = " ".join(str(value).split())
    return text if len(text) <= DESCRIPTION_CHARS else text[:DESCRIPTION_CHARS] + "…"


_LISTINGS: dict[Path, tuple[dict[str, int], tuple[list[str], list[str]]]] = {}
"""Per memory dir: the mtime of each of its directories when last listed, and the notes."""


def _walk(memory_dir: Path) -> tuple[list[str], list[str]]:
    """Every note's path under memory/ but the core: topic and people notes by path, journal
    days newest first. From directory listings (no stat per file: an agent may
    have thousands of notes and this runs every turn). A directory's names change only when
    its mtime does, so an unchanged set of directories reuses the last listing."""
    cached = _LISTINGS.get(memory_dir)
    if cached is not None:
        try:
            if all(os.stat(d).st_mtime_ns == m for d, m in cached[0].items()):
                return cached[1]
        except FileNotFoundError:
            pass
    out: list[str] = []
    dirs: dict[str, int] = {}
    cut = len(str(memory_dir)) + 1
    stack = [str(memory_dir)]
    while stack:
        d = stack.pop()
        try:
            dirs[d] = os.stat(d).st_mtime_ns
            entries = list(os.scandir(d))
        except FileNotFoundError:
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
            elif e.name.endswith(".md"):
                out.append(e.path[cut:])
    notes = sorted(f for f in out if f != CORE and not f.startswith(JOURNAL + "/"))
    journal = sorted((f for f in out if f.startswith(JOURNAL + "/")), reverse=True)
    if len(_LISTINGS) > 256:
        _LISTINGS.clear()
    _LISTINGS[memory_dir] = (dirs, (notes, journal))
    return notes, journal


@dataclass(frozen=True)
class Index:
    notes: list[tuple[str, str]]
    """(path, description) of the notes listed, topic and people notes first."""
    more: int
    """Notes left out of the list (the model finds them with memory_search)."""


def index(memory_dir: Path, limit: int = INDEX_LIMIT) -> Index:
    """Every note but the core, for the model to read on demand: topic and people notes by
    path, then the newest journal days; at most `limit`."""
    notes, journal = _walk(memory_dir)
    listed = (notes + journal[:JOURNAL_DAYS_LISTED])[:limit]
    out = []
    for rel in listed:
        try:
            st = (memory_dir / rel).stat()
        except FileNotFoundError:
            continue
        out.append((rel, _description(memory_dir / rel, st.st_mtime_ns, st.st_size)))
    return Index(out, len(notes) + len(journal) - len(listed))
