"""memory_write: append to or replace a memory note, with a reason that goes into the commit."""

from __future__ import annotations

from typing import Literal

from anima.errors import ToolError
from anima.fsutil import write_atomic
from anima.memory import cap_for, read_only
from anima.tools.base import ToolContext, tool
from anima.tools.files import confine


@tool()
def memory_write(
    ctx: ToolContext,
    path: str,
    content: str,
    reason: str,
    mode: Literal["append", "replace"] = "append",
) -> str:
    """Save durable knowledge to your memory folder. MEMORY.md is your core memory (always in
    context, size-capped); other notes (e.g. people/NAME.md, topic.md) are listed and read on
    demand.

    Args:
        path: note path inside memory/, e.g. MEMORY.md or people/ana.md
        content: text to append, or the whole new text for replace
        reason: why you are saving this; it is written into the commit message
        mode: append (default) or replace
    """
    if not reason.strip():
        raise ToolError("reason is required: say why this belongs in memory")
    if not path.endswith(".md"):
        raise ToolError("memory notes are Markdown files: the path must end in .md")
    target = confine(ctx.memory_dir, path)
    rel = str(target.relative_to(ctx.memory_dir.resolve()))
    if read_only(target):
        raise ToolError(f"memory/{rel} is read-only (read_only: true in its front matter)")
    old = target.read_text(encoding="utf-8") if target.exists() else ""
    if mode == "append":
        new = old + ("" if not old or old.endswith("\n") else "\n") + content.rstrip("\n") + "\n"
    else:
        new = content if content.endswith("\n") else content + "\n"
    cap = cap_for(rel, ctx.config.budget)
    if len(new) > cap:
        raise ToolError(
            f"memory/{rel} would be {len(new)} characters; the cap is {cap} "
            f"({len(old)} used). Condense it with mode=replace first."
        )
    write_atomic(target, new)
    ctx.touched.add(f"memory/{rel}")
    ctx.reasons.append(f"memory/{rel}: {' '.join(reason.split())}")
    return f"saved to memory/{rel} ({len(new)}/{cap} characters)"


@tool()
def memory_read(ctx: ToolContext, path: str) -> str:
    """Read a note from your memory folder (the index of notes is in your context).

    Args:
        path: note path inside memory/, e.g. people/ana.md
    """
    target = confine(ctx.memory_dir, path)
    if not target.is_file():
        raise ToolError(f"memory/{path}: no such note")
    return target.read_text(encoding="utf-8", errors="replace")
