"""Crash-safe file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomic(
    path: Path,
    data: str | bytes,
    *,
    tmp_dir: Path | None = None,
    mtime: float | None = None,
    durable: bool = True,
) -> None:
    """Write `data` to `path` via a temp file and rename (atomic on POSIX). With `durable`
    (the default) the file and its directory are fsynced, so it survives a power loss too;
    without, it still survives a killed process."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    directory = tmp_dir or path.parent
    directory.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_file(directory, path.name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def _temp_file(directory: Path, name: str) -> tuple[int, str]:
    """A new hidden file beside the target, created exclusively (what tempfile.mkstemp does,
    without importing tempfile, which `anima send` would pay for on every start)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    while True:
        tmp = str(directory / f".{name}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue


def append_durable(path: Path, text: str) -> None:
    """Append a line-oriented record and fsync it (JSONL history)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
