"""Memory files: the capped core (MEMORY.md), notes with descriptions, and their index."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import frontmatter
import yaml

from anima.config import Budget

CORE = "MEMORY.md"
INDEX_LIMIT = 200


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


def index(memory_dir: Path) -> list[tuple[str, str]]:
    """(path, description) of every note but the core, for the model to read on demand."""
    if not memory_dir.is_dir():
        return []
    notes = []
    for p in sorted(memory_dir.rglob("*.md")):
        rel = str(p.relative_to(memory_dir))
        if rel == CORE:
            continue
        notes.append((rel, str(_meta(p).get("description", ""))))
        if len(notes) >= INDEX_LIMIT:
            break
    return notes
