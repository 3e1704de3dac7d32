"""Memory files: the capped core (MEMORY.md), notes with descriptions, and their index."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import frontmatter
import yaml

from anima.config import Budget

CORE = "MEMORY.md"
INDEX_LIMIT = 100
JOURNAL = "journal"
JOURNAL_DAYS_LISTED = 7


def cap_for(relative: str, budget: Budget) -> int:
    return budget.memory_chars if relative == CORE else budget.note_chars


def _meta(path: Path) -> dict[str, object]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    if not text.startswith("---"):
        return {}
    try:
        meta = frontmatter.loads(text).metadata
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


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
    lists every note, and re-parsing YAML for each would cost more than the turn)."""
    return str(_meta(path).get("description", "") or "")


def _walk(memory_dir: Path) -> list[tuple[str, os.stat_result]]:
    out = []
    stack = [memory_dir]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except FileNotFoundError:
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
            elif e.name.endswith(".md"):
                out.append((os.path.relpath(e.path, memory_dir), e.stat(follow_symlinks=False)))
    return out


@dataclass(frozen=True)
class Index:
    notes: list[tuple[str, str]]
    """(path, description) of the notes listed, topic and people notes first."""
    more: int
    """Notes left out of the list (the model finds them with memory_search)."""


def index(memory_dir: Path, limit: int = INDEX_LIMIT) -> Index:
    """Every note but the core, for the model to read on demand: topic and people notes by
    path, then the newest journal days; at most `limit`."""
    files = [(rel, st) for rel, st in _walk(memory_dir) if rel != CORE]
    notes = sorted((f for f in files if not f[0].startswith(JOURNAL + "/")), key=lambda f: f[0])
    journal = sorted((f for f in files if f[0].startswith(JOURNAL + "/")), reverse=True)
    listed = (notes + journal[:JOURNAL_DAYS_LISTED])[:limit]
    return Index(
        [(rel, _description(memory_dir / rel, st.st_mtime_ns, st.st_size)) for rel, st in listed],
        len(files) - len(listed),
    )
