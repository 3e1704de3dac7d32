"""File tools, confined to the agent's workspace/: no absolute paths, no `..`, no symlink escape,
and nothing written under a name git keeps for itself (see `git_name`)."""

from __future__ import annotations

import os
import shutil
import unicodedata
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from anima.errors import ToolError
from anima.fsutil import write_atomic
from anima.tools.base import ToolContext, tool

LIST_LIMIT = 500
READ_MAX_BYTES = 8 * 1024 * 1024
NAME_MAX = 255
PATH_MAX = 1024
"""Bytes in one file name, and in a whole path relative to the workspace (Linux allows 4096
in all, and the workspace's own path comes on top)."""
GIT_FILES = frozenset({".gitattributes", ".gitignore", ".gitmodules"})
"""Files that change what git commits (filters, ignores, submodules): as much git's as .git/."""


def git_name(part: str) -> bool:
    """Whether a path component is one git keeps for itself: `.git` in any case spelling, with
    the trailing dots or spaces and invisible characters that git (or NTFS/HFS) ignores, an NTFS
    stream of it (`.git::$INDEX_ALLOCATION`) or its short name `git~1`, and GIT_FILES. git refuses
    to add several of these, so one in the tree would leave the agent unable to commit."""
    name = "".join(ch for ch in part if unicodedata.category(ch) != "Cf").rstrip(" .").casefold()
    return (
        name in (".git", "git~1")
        or name.startswith(".git:")
        or name in GIT_FILES
        or name.split(":")[0] in GIT_FILES
    )


def confine(root: Path, relative: str, *, writing: bool = False) -> Path:
    """Resolve `relative` inside `root` or raise ToolError saying why not. A path to write
    may not name git's own files, before or after symlinks are followed."""
    if "\x00" in relative:
        raise ToolError("path contains a NUL byte")
    pure = PurePosixPath(relative)
    if len(relative.encode()) > PATH_MAX or any(len(p.encode()) > NAME_MAX for p in pure.parts):
        raise ToolError(
            f"path too long: at most {NAME_MAX} bytes a name and {PATH_MAX} bytes in all"
        )
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
    if writing and any(map(git_name, (*pure.parts, *target.relative_to(root).parts))):
        raise ToolError(
            f"{relative!r}: refused, names like .git, .gitignore, .gitattributes and .gitmodules "
            "belong to git (your files are committed to a git repository)"
        )
    return target


def sweep_git_names(root: Path) -> list[str]:
    """Remove every file or folder under `root` that `git_name` protects (a command may have
    written a .gitattributes, or a `.GIT` that git refuses to add); returns what was removed,
    relative to `root`. A real nested repository (`.git` itself) is kept: the agent's commit
    records its files as plain files (gitstore), and its own history is not ours to delete."""
    removed = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            if not git_name(name) or name == ".git":
                continue
            path = Path(dirpath) / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(str(path.relative_to(root)))
        dirnames[:] = [d for d in dirnames if not git_name(d)]
    return removed


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
    with open(target, "rb") as fh:
        raw = fh.read(READ_MAX_BYTES + 1)
    if b"\x00" in raw[:8192]:
        raise ToolError(f"{path!r} is a binary file; only text files can be read")
    cut = len(raw) > READ_MAX_BYTES
    lines = raw[:READ_MAX_BYTES].decode("utf-8", errors="replace").splitlines()
    offset = max(0, offset)
    shown = lines[offset : offset + max(1, limit)]
    body = "\n".join(f"{i + offset + 1:6}\t{line}" for i, line in enumerate(shown))
    if offset + len(shown) < len(lines):
        body += f"\n[{len(lines) - offset - len(shown)} more lines: read with offset={offset + len(shown)}]"
    if cut:
        body += f"\n[only the first {READ_MAX_BYTES} bytes of this file can be read]"
    return body or "(empty file)"


@tool()
def write_file(ctx: ToolContext, path: str, content: str) -> str:
    """Create or overwrite a text file in your workspace (parent folders are created).

    Args:
        path: file path relative to your workspace
        content: the whole new content
    """
    target = confine(ctx.workspace, path, writing=True)
    size = len(content.encode("utf-8"))
    if size > ctx.config.tools.file_max_bytes:
        raise ToolError(f"content is {size} bytes; the limit is {ctx.config.tools.file_max_bytes}")
    if target.is_dir():
        raise ToolError(f"{path!r} is a directory")
    ctx.touched.add(_rel(ctx, target))  # named before the write: a crash mid-write is undone
    write_atomic(target, content)
    return f"wrote {size} bytes to {path}"


@tool()
def edit_file(ctx: ToolContext, path: str, old_text: str, new_text: str) -> str:
    """Replace one exact occurrence of old_text with new_text in a workspace file.

    Args:
        path: file path relative to your workspace
        old_text: text to replace; must occur exactly once
        new_text: replacement text
    """
    target = confine(ctx.workspace, path, writing=True)
    if not target.is_file():
        raise ToolError(f"{path!r}: no such file in your workspace")
    try:
        text = target.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise ToolError(f"{path!r} is not UTF-8 text; rewrite it whole with write_file") from None
    count = text.count(old_text) if old_text else 0
    if count != 1:
        raise ToolError(
            f"old_text occurs {count} times in {path!r}; it must match exactly once "
            "(include more surrounding text)"
        )
    ctx.touched.add(_rel(ctx, target))  # named before the write: a crash mid-write is undone
    write_atomic(target, text.replace(old_text, new_text, 1))
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
    for p in _walk(root):
        rel = p.relative_to(base)
        if p.is_symlink():
            entries.append(f"{rel} -> {os.readlink(p)}  (symlink)")
        elif p.is_dir():
            entries.append(f"{rel}/")
        else:
            entries.append(f"{rel}  ({p.lstat().st_size} bytes)")
        if len(entries) >= LIST_LIMIT:
            entries.append(f"[stopped at {LIST_LIMIT} entries]")
            break
    return "\n".join(entries) or "(empty)"


def _walk(folder: Path) -> Iterator[Path]:
    """Everything below `folder`, depth first in name order; symlinks are listed, not followed."""
    for p in sorted(folder.iterdir()):
        if p.name != ".gitkeep":
            yield p
            if p.is_dir() and not p.is_symlink():
                yield from _walk(p)
