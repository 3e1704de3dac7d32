"""File tools, confined to the agent's workspace/: no absolute paths, no `..`, no symlink escape."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from anima.errors import ToolError
from anima.fsutil import write_atomic
from anima.tools.base import ToolContext, tool

LIST_LIMIT = 500


def confine(root: Path, relative: str) -> Path:
    """Resolve `relative` inside `root` or raise ToolError saying why not."""
    if "\x00" in relative:
        raise ToolError("path contains a NUL byte")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or relative.startswith("~"):
        raise ToolError(
            f"{relative!r}: absolute paths are refused; paths are relative to your workspace"
        )
    if ".." in pure.parts:
        raise ToolError(f"{relative!r}: '..' is refused; paths stay inside your workspace")
    root = root.resolve()
    target = (root / pure).resolve()
    if target != root and not target.is_relative_to(root):
        raise ToolError(f"{relative!r}: refused, it leads outside your workspace (symlink)")
    return target


def _rel(ctx: ToolContext, path: Path) -> str:
    return str(path.relative_to(ctx.agent_dir.resolve()))


@tool()
def read_file(ctx: ToolContext, path: str, offset: int = 0, limit: int = 2000) -> str:
    """Read a text file from your workspace, with line numbers.

    Args:
        path: file path relative to your workspace
        offset: first line to show (0-based)
        limit: how many lines to show at most
    """
    target = confine(ctx.workspace, path)
    if not target.is_file():
        raise ToolError(f"{path!r}: no such file in your workspace")
    raw = target.read_bytes()
    if b"\x00" in raw[:8192]:
        raise ToolError(f"{path!r} is a binary file; only text files can be read")
    lines = raw.decode("utf-8", errors="replace").splitlines()
    shown = lines[max(0, offset) : max(0, offset) + max(1, limit)]
    body = "\n".join(f"{i + offset + 1:6}\t{line}" for i, line in enumerate(shown))
    if offset + len(shown) < len(lines):
        body += f"\n[{len(lines) - offset - len(shown)} more lines: read with offset={offset + len(shown)}]"
    return body or "(empty file)"


@tool()
def write_file(ctx: ToolContext, path: str, content: str) -> str:
    """Create or overwrite a text file in your workspace (parent folders are created).

    Args:
        path: file path relative to your workspace
        content: the whole new content
    """
    target = confine(ctx.workspace, path)
    size = len(content.encode("utf-8"))
    if size > ctx.config.tools.file_max_bytes:
        raise ToolError(f"content is {size} bytes; the limit is {ctx.config.tools.file_max_bytes}")
    if target.is_dir():
        raise ToolError(f"{path!r} is a directory")
    write_atomic(target, content)
    ctx.touched.add(_rel(ctx, target))
    return f"wrote {size} bytes to {path}"


@tool()
def edit_file(ctx: ToolContext, path: str, old_text: str, new_text: str) -> str:
    """Replace one exact occurrence of old_text with new_text in a workspace file.

    Args:
        path: file path relative to your workspace
        old_text: text to replace; must occur exactly once
        new_text: replacement text
    """
    target = confine(ctx.workspace, path)
    if not target.is_file():
        raise ToolError(f"{path!r}: no such file in your workspace")
    text = target.read_text(encoding="utf-8", errors="strict")
    count = text.count(old_text) if old_text else 0
    if count != 1:
        raise ToolError(
            f"old_text occurs {count} times in {path!r}; it must match exactly once "
            "(include more surrounding text)"
        )
    write_atomic(target, text.replace(old_text, new_text, 1))
    ctx.touched.add(_rel(ctx, target))
    return f"edited {path}"


@tool()
def list_files(ctx: ToolContext, path: str = ".") -> str:
    """List files and folders in your workspace (recursively, up to 500 entries).

    Args:
        path: folder relative to your workspace
    """
    root = confine(ctx.workspace, path)
    if not root.is_dir():
        raise ToolError(f"{path!r}: no such folder in your workspace")
    base = ctx.workspace.resolve()
    entries = []
    for p in sorted(root.rglob("*")):
        if p.name == ".gitkeep":
            continue
        rel = p.relative_to(base)
        entries.append(f"{rel}/" if p.is_dir() else f"{rel}  ({p.stat().st_size} bytes)")
        if len(entries) >= LIST_LIMIT:
            entries.append(f"[stopped at {LIST_LIMIT} entries]")
            break
    return "\n".join(entries) or "(empty)"
