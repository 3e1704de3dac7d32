"""memory: one tool to view and edit the agent's memory/ folder. Every write needs a reason,
which goes into the turn's commit message; caps hold on every write path (each note, the bytes
written in one turn, the whole folder); read_only notes are refused."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from anima.errors import ToolError
from anima.fsutil import write_atomic
from anima.memory import CORE, cap_for, index, read_only
from anima.tools.base import ToolContext, tool
from anima.tools.files import confine

Command = Literal["view", "create", "str_replace", "insert", "delete", "rename"]


def _note(ctx: ToolContext, path: str, *, writing: bool = False) -> tuple[Path, str]:
    if not path.strip() or path.strip() in (".", "/"):
        raise ToolError("give a note path inside memory/, e.g. MEMORY.md or people/ana.md")
    if not path.endswith(".md"):
        raise ToolError("memory notes are Markdown files: the path must end in .md")
    target = confine(ctx.memory_dir, path, writing=writing)
    return target, str(target.relative_to(ctx.memory_dir.resolve()))


def _save(ctx: ToolContext, target: Path, rel: str, text: str, reason: str, what: str) -> str:
    cap = cap_for(rel, ctx.config.budget)
    if len(text) > cap:
        raise ToolError(
            f"memory/{rel} would be {len(text)} characters; its cap is {cap}. "
            "Condense it (str_replace) or put details in another note."
        )
    size = len(text.encode("utf-8"))
    _check_totals(ctx, target, size)
    ctx.touched.add(f"memory/{rel}")  # named before the write: a crash mid-write is undone
    write_atomic(target, text)
    ctx.memory_written += size
    _record(ctx, rel, reason, what)
    return f"{what} memory/{rel} ({len(text)}/{cap} characters)"


def _check_totals(ctx: ToolContext, target: Path, size: int) -> None:
    """Refuse a write past the turn's allowance or one that grows memory/ past its total cap
    (a write that shrinks or keeps a note's size is always allowed, so an agent over the cap
    can still condense)."""
    budget = ctx.config.budget
    if ctx.memory_written + size > budget.memory_turn_bytes:
        raise ToolError(
            f"this turn has written {ctx.memory_written} bytes of memory; {size} more would pass "
            f"the limit of {budget.memory_turn_bytes} bytes a turn. Continue in a later turn."
        )
    old = target.stat().st_size if target.is_file() else 0
    if size <= old:
        return
    total = _folder_bytes(ctx.memory_dir)
    if total - old + size > budget.memory_total_bytes:
        raise ToolError(
            f"memory/ holds {total} bytes; this write would take it past its cap of "
            f"{budget.memory_total_bytes}. Delete or condense notes you no longer need first."
        )


def _folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(dirpath) / name).lstat().st_size
    return total


def _record(ctx: ToolContext, rel: str, reason: str, what: str) -> None:
    ctx.touched.add(f"memory/{rel}")
    printable = "".join(ch if ch.isprintable() else " " for ch in reason)  # for the commit message
    ctx.reasons.append(f"{what} memory/{rel}: {' '.join(printable.split())}")


def _view(ctx: ToolContext, path: str) -> str:
    if not path.strip() or path.strip() in (".", "/"):
        idx = index(ctx.memory_dir, limit=500)
        lines = ["memory/MEMORY.md (core, always in context)"]
        lines += [f"memory/{p}" + (f" — {d}" if d else "") for p, d in idx.notes]
        if idx.more:
            lines.append(
                f"… and {idx.more} more (older journal days): find them with memory_search"
            )
        return "\n".join(lines)
    target, rel = _note(ctx, path)
    if not target.is_file():
        raise ToolError(f"memory/{rel}: no such note")
    text = target.read_text(encoding="utf-8", errors="replace")
    return "\n".join(f"{i + 1:6}\t{line}" for i, line in enumerate(text.splitlines())) or "(empty)"


@tool()
def memory(
    ctx: ToolContext,
    command: Command,
    path: str = "",
    reason: str = "",
    file_text: str = "",
    old_str: str = "",
    new_str: str = "",
    insert_line: int = -1,
    insert_text: str = "",
    new_path: str = "",
) -> str:
    """Your memory folder: MEMORY.md is your core memory (always in context, size-capped); other
    notes (people/NAME.md, topic.md with a `description:` front matter line, journal/DATE.md) are
    listed in your context and read with view. Edits show in your context from the next turn.

    Args:
        command: view (a note, or the list with no path), create, str_replace, insert, delete, rename
        path: note path inside memory/, e.g. MEMORY.md or people/ana.md
        reason: why; required for every change, and written into the commit message
        file_text: create: the whole content
        old_str: str_replace: text that must occur exactly once
        new_str: str_replace: its replacement
        insert_line: insert: the line to insert after (0 = at the top, -1 = at the end)
        insert_text: insert: the text to insert
        new_path: rename: the new path
    """
    if command == "view":
        return _view(ctx, path)
    if not reason.strip():
        raise ToolError(f"reason is required for {command}: say why, it goes into the commit")
    target, rel = _note(ctx, path, writing=True)
    if read_only(target):
        raise ToolError(f"memory/{rel} is read-only (read_only: true in its front matter)")
    if command != "create" and not target.is_file():
        raise ToolError(f"memory/{rel}: no such note (create it first)")
    args = _Args(file_text, old_str, new_str, insert_line, insert_text, new_path)
    return _COMMANDS[command](ctx, target, rel, reason, args)


@dataclass(frozen=True)
class _Args:
    file_text: str
    old_str: str
    new_str: str
    insert_line: int
    insert_text: str
    new_path: str


def _create(ctx: ToolContext, target: Path, rel: str, reason: str, a: _Args) -> str:
    if target.exists():
        raise ToolError(f"memory/{rel} exists; use str_replace or insert to change it")
    text = a.file_text if a.file_text.endswith("\n") else a.file_text + "\n"
    return _save(ctx, target, rel, text, reason, "created")


def _str_replace(ctx: ToolContext, target: Path, rel: str, reason: str, a: _Args) -> str:
    text = target.read_text(encoding="utf-8")
    count = text.count(a.old_str) if a.old_str else 0
    if count != 1:
        raise ToolError(
            f"old_str occurs {count} times in memory/{rel}; it must occur exactly "
            "once (include more surrounding text)"
        )
    return _save(ctx, target, rel, text.replace(a.old_str, a.new_str, 1), reason, "edited")


def _insert(ctx: ToolContext, target: Path, rel: str, reason: str, a: _Args) -> str:
    lines = target.read_text(encoding="utf-8").splitlines(keepends=True)
    at = len(lines) if a.insert_line < 0 else a.insert_line
    if at > len(lines):
        raise ToolError(f"insert_line {a.insert_line} is past the end ({len(lines)} lines)")
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    block = a.insert_text if a.insert_text.endswith("\n") else a.insert_text + "\n"
    text = "".join(lines[:at]) + block + "".join(lines[at:])
    return _save(ctx, target, rel, text, reason, "edited")


def _delete(ctx: ToolContext, target: Path, rel: str, reason: str, a: _Args) -> str:
    if rel == CORE:
        raise ToolError("MEMORY.md is your core memory and cannot be deleted; edit it instead")
    ctx.touched.add(f"memory/{rel}")
    target.unlink()
    _record(ctx, rel, reason, "deleted")
    return f"deleted memory/{rel}"


def _rename(ctx: ToolContext, target: Path, rel: str, reason: str, a: _Args) -> str:
    if rel == CORE:
        raise ToolError("MEMORY.md is your core memory and cannot be renamed")
    dest, dest_rel = _note(ctx, a.new_path, writing=True)
    if dest.exists():
        raise ToolError(f"memory/{dest_rel} exists")
    size = len(target.read_text(encoding="utf-8"))
    cap = cap_for(dest_rel, ctx.config.budget)
    if size > cap:
        raise ToolError(f"memory/{dest_rel} would be {size} characters; its cap is {cap}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    ctx.touched.update([f"memory/{rel}", f"memory/{dest_rel}"])
    os.replace(target, dest)
    _record(ctx, rel, reason, "renamed")
    _record(ctx, dest_rel, reason, "renamed to")
    return f"renamed memory/{rel} to memory/{dest_rel}"


_COMMANDS: dict[str, Callable[[ToolContext, Path, str, str, _Args], str]] = {
    "create": _create,
    "str_replace": _str_replace,
    "insert": _insert,
    "delete": _delete,
    "rename": _rename,
}


@tool()
def memory_search(ctx: ToolContext, query: str, limit: int = 5) -> str:
    """Search your memory notes and all past conversations (keyword search, best first).

    Args:
        query: words to look for
        limit: how many results at most
    """
    from anima.search import search

    hits = search(ctx.agent_dir, query, limit=max(1, min(limit, 20)), touched=ctx.touched)
    if not hits:
        return "nothing found"
    return "\n".join(
        f"- {h.path}" + (f" ({h.date})" if h.date else "") + f": {h.snippet}" for h in hits
    )
