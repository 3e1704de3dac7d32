"""The agent repository: init, the per-agent lock, committing a turn with trailers, the log, undo.

Only this module imports git. Commits go through git's own CLI (via GitPython's wrapper), which is
~4x faster than GitPython's index API (DESIGN §8) and never leaves a half-written index.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import io
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import git
from git.objects.fun import tree_entries_from_data, tree_to_stream
from gitdb import LooseObjectDB
from gitdb.base import IStream

from anima.errors import AnimaError, Busy

BOT_EMAIL_DOMAIN = "anima.local"
_FIELD = "\x1f"
_RECORD = "\x1e"


@functools.lru_cache(maxsize=256)
def _repo(path: Path) -> git.Repo:
    # Reused: building a Repo costs ~1 ms. One agent's repo is only used under its lock.
    return git.Repo(path)


def _head_sha(repo: git.Repo) -> str:
    """HEAD's sha from the ref files, without asking git for the commit object (~2 ms saved)."""
    return str(git.SymbolicReference.dereference_recursive(repo, "HEAD"))


def init_repo(path: Path, name: str) -> str:
    """`git init` an agent directory and commit the template. Returns the commit sha."""
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", name)
        cw.set_value("user", "email", f"{name}@{BOT_EMAIL_DOMAIN}")
        cw.set_value("commit", "gpgsign", "false")
        cw.set_value(
            "gc", "auto", "0"
        )  # no gc inside a turn's commit: gc_auto() runs it off the hot path
        cw.set_value("maintenance", "auto", "false")
        # An agent's tree grows by two files a turn; these keep index writes and the pre-turn
        # status check proportional to what changed, not to the repo (bench/turn_overhead.py).
        cw.set_value("core", "untrackedCache", "true")
        cw.set_value("core", "splitIndex", "true")
        cw.set_value("splitIndex", "maxPercentChange", "20")
    repo.git.add("-A")
    repo.git.commit("-q", "-m", f"init({name}): new agent from template", "--no-verify")
    return repo.head.commit.hexsha


@contextlib.contextmanager
def agent_lock(lock_path: Path, *, timeout: float | None = None) -> Iterator[None]:
    """One writer per agent repository (DESIGN §1.3): an flock that dies with its process."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise Busy(
                        f"{lock_path.stem} is busy: another process holds {lock_path}"
                    ) from None
                time.sleep(0.01)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)  # closing releases the flock


def recover(path: Path) -> list[str]:
    """Remove lock files a killed git (or our own commit) left: index.lock, HEAD.lock,
    refs/**.lock, packed-refs.lock. Only call while holding the agent lock: then no writer of
    ours is running, and only the runtime writes an agent repo. Returns what was removed."""
    git_dir = path / ".git"
    stale = [git_dir / n for n in ("index.lock", "HEAD.lock", "packed-refs.lock")]
    stale += list((git_dir / "refs").rglob("*.lock"))
    removed = []
    for lock in stale:
        if lock.exists():
            lock.unlink(missing_ok=True)
            removed.append(str(lock.relative_to(git_dir)))
    return removed


RUNTIME_WRITTEN = {"archive", "outbox", "history", "inbox", ".git", ".cache"}
"""Only the runtime writes these (two files a turn; .cache/ is the git-ignored search index), so
the check for hand edits before each turn skips them; a full check runs on start-up and
periodically."""


def _hand_edited(path: Path) -> list[str]:
    return sorted(e for e in os.listdir(path) if e not in RUNTIME_WRITTEN)


def dirty_paths(path: Path, pathspec: Sequence[str] = ()) -> list[str]:
    """Paths changed since HEAD, untracked included (ignored files excluded)."""
    out = _repo(path).git.status("--porcelain=v1", "-z", "--untracked-files=all", "--", *pathspec)
    paths = []
    entries = out.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        if len(entry) > 3:
            paths.append(entry[3:])
            if entry[0] in "RC":
                i += 1  # the rename's source follows
        i += 1
    return paths


def _changed_since_check(path: Path, entries: list[str]) -> bool:
    """Has anything in `entries` (files, or directories walked) been modified, created or
    removed since the last hand-edit check? mtimes only: a few dozen stats, not a git status."""
    stamp = path / ".git" / "anima-checked"
    try:
        since = stamp.stat().st_mtime_ns
    except FileNotFoundError:
        return True
    if path.stat().st_mtime_ns >= since:
        return True
    for entry in entries:
        p = path / entry
        if not p.is_dir():
            if p.exists() and p.lstat().st_mtime_ns >= since:
                return True
            continue
        for root, dirs, files in os.walk(p):
            for name in (root, *(os.path.join(root, n) for n in files + dirs)):
                if os.lstat(name).st_mtime_ns >= since:
                    return True
    return False


def commit_external(path: Path, *, full: bool = True) -> str | None:
    """Commit whatever a person changed by hand since the last turn, so the log attributes it.
    Without `full`, the runtime's own directories are skipped, and git is not asked at all
    when no hand-editable file changed since the last check (fast on a large repo)."""
    stamp = path / ".git" / "anima-checked"
    entries = _hand_edited(path)
    if not full and not _changed_since_check(path, entries):
        return None
    stamp.touch()  # before the check: an edit made during it is seen next time
    changed = dirty_paths(path, () if full else entries)
    if not changed:
        return None
    repo = _repo(path)
    repo.git.add("-A", "--", ".")
    shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    repo.git.commit(
        "-q",
        "--no-verify",
        "-m",
        f"external: hand edits to {shown}",
        "--author",
        f"external <external@{BOT_EMAIL_DOMAIN}>",
    )
    return repo.head.commit.hexsha


def commit(
    path: Path,
    subject: str,
    *,
    body: str = "",
    trailers: Sequence[tuple[str, str]] = (),
    paths: Sequence[str] = (),
) -> str:
    """Stage exactly `paths` (additions, edits and deletions) and commit them. Returns the sha.

    Not `git commit`, which re-stats every tracked file: `update-index` touches only the given
    entries (and writes their blobs), and the trees and the commit object are written here,
    rebuilding only the directories on the changed paths (bench/turn_overhead.py)."""
    repo = _repo(path)
    message = subject.strip()
    if body.strip():
        message += "\n\n" + body.strip()
    if trailers:
        message += "\n\n" + "\n".join(f"{k}: {_one_line(v)}" for k, v in trailers)
    dirs = [p for p in paths if (path / p).is_dir()]
    if dirs:  # a whole directory (the shell tool's workspace): let git find what changed
        repo.git.add("-A", "--", *paths)
        repo.git.commit("-q", "--no-verify", "--allow-empty", "-m", message)
        return _head_sha(repo)
    if paths:
        repo.git.update_index("--add", "--remove", "--", *paths)
    parent = _head_sha(repo)
    tree = _tree_with(repo, repo.odb.stream(bytes.fromhex(parent)), path, paths)
    stamp = f"{int(time.time())} {time.strftime('%z')}"
    name, email = _identity(repo)
    raw = (
        f"tree {tree.hex()}\nparent {parent}\nauthor {name} <{email}> {stamp}\n"
        f"committer {name} <{email}> {stamp}\n\n{message}\n"
    ).encode()
    binsha = bytes(_loose(repo).store(IStream(b"commit", len(raw), io.BytesIO(raw))).binsha)
    repo.head.reference.set_object(
        git.Commit(repo, binsha), logmsg=f"commit: {subject.strip()[:60]}"
    )
    return binsha.hex()


@functools.lru_cache(maxsize=256)
def _loose(repo: git.Repo) -> LooseObjectDB:
    """Writes objects in-process (GitPython's own odb.store runs `git hash-object`)."""
    return LooseObjectDB(str(Path(repo.git_dir) / "objects"))


@functools.lru_cache(maxsize=256)
def _identity(repo: git.Repo) -> tuple[str, str]:
    reader = repo.config_reader()
    return (
        str(reader.get_value("user", "name", "anima")),
        str(reader.get_value("user", "email", f"anima@{BOT_EMAIL_DOMAIN}")),
    )


class _TreeCache:
    """Entries of trees this process wrote, by sha (content-addressed: never stale). The next
    turn starts from them instead of reading the same trees back from git."""

    def __init__(self, size: int = 512):
        self._size = size
        self._data: dict[bytes, dict[str, tuple[bytes, int]]] = {}
        self._lock = threading.Lock()

    def get(self, sha: bytes) -> dict[str, tuple[bytes, int]] | None:
        with self._lock:
            return self._data.get(sha)

    def put(self, sha: bytes, entries: dict[str, tuple[bytes, int]]) -> None:
        with self._lock:
            if len(self._data) >= self._size:
                self._data.pop(next(iter(self._data)))
            self._data[sha] = dict(entries)


_TREES = _TreeCache()


def _blob_sha(data: bytes) -> bytes:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).digest()  # noqa: S324 (git's id)


def _tree_with(repo: git.Repo, commit_stream: object, root: Path, paths: Sequence[str]) -> bytes:
    """HEAD's tree with `paths` set to their working-tree content (or removed)."""
    data = commit_stream.read()  # type: ignore[attr-defined]
    head_tree = bytes.fromhex(data.split(b"\n", 1)[0].split()[1].decode())
    changes: dict[tuple[str, ...], bytes | None] = {}
    for p in paths:
        f = root / p
        changes[tuple(p.split("/"))] = _blob_sha(f.read_bytes()) if f.is_file() else None
    return _write_tree(repo, head_tree, changes) or _write_tree(repo, None, {}) or b""


def _write_tree(
    repo: git.Repo, base: bytes | None, changes: dict[tuple[str, ...], bytes | None]
) -> bytes | None:
    entries: dict[str, tuple[bytes, int]] = {}
    if base is not None:
        cached = _TREES.get(base)
        if cached is not None:
            entries = dict(cached)
        else:
            for binsha, mode, name in tree_entries_from_data(repo.odb.stream(base).read()):
                entries[name] = (binsha, mode)
    subdirs: dict[str, dict[tuple[str, ...], bytes | None]] = {}
    for parts, blob in changes.items():
        if len(parts) == 1:
            if blob is None:
                entries.pop(parts[0], None)
            else:
                entries[parts[0]] = (blob, 0o100644)
        else:
            subdirs.setdefault(parts[0], {})[parts[1:]] = blob
    for name, sub in subdirs.items():
        old = entries.get(name)
        sub_base = old[0] if old and old[1] == 0o40000 else None
        new = _write_tree(repo, sub_base, sub)
        if new is None:
            entries.pop(name, None)
        else:
            entries[name] = (new, 0o40000)
    if not entries and base is not None:
        return None  # git has no empty subtrees
    # git orders tree entries by name, a directory as if its name ended in "/"
    ordered = sorted(entries.items(), key=lambda e: e[0] + "/" if e[1][1] == 0o40000 else e[0])
    buf = io.BytesIO()
    tree_to_stream([(sha, mode, name) for name, (sha, mode) in ordered], buf.write)
    raw = buf.getvalue()
    binsha = bytes(_loose(repo).store(IStream(b"tree", len(raw), io.BytesIO(raw))).binsha)
    _TREES.put(binsha, entries)
    return binsha


def _tree_entries(repo: git.Repo, sha: bytes) -> dict[str, tuple[bytes, int]]:
    cached = _TREES.get(sha)
    if cached is not None:
        return cached
    return {
        name: (b, mode) for b, mode, name in tree_entries_from_data(repo.odb.stream(sha).read())
    }


def changed_between(path: Path, old: str, new: str, roots: Sequence[str]) -> list[str] | None:
    """Files under `roots` that differ between commits `old` and `new`, found in-process by
    descending only into subtrees whose ids differ (a turn touches a handful of paths, so this
    costs far less than a stat of every file). None when `old` is not in the repository."""
    repo = _repo(path)

    def tree_of(commit: str) -> bytes:
        data = repo.odb.stream(bytes.fromhex(commit)).read()
        return bytes.fromhex(data.split(b"\n", 1)[0].split()[1].decode())

    try:
        old_tree = tree_of(old)
    except (ValueError, OSError, git.BadName, git.BadObject):
        return None
    out: list[str] = []

    def walk(a: bytes | None, b: bytes | None, prefix: str) -> None:
        if a == b:
            return
        ea = _tree_entries(repo, a) if a else {}
        eb = _tree_entries(repo, b) if b else {}
        for name in ea.keys() | eb.keys():
            x, y = ea.get(name), eb.get(name)
            if x == y:
                continue
            x_dir = x is not None and x[1] == 0o40000
            y_dir = y is not None and y[1] == 0o40000
            if x_dir or y_dir:
                walk(
                    x[0] if x is not None and x_dir else None,
                    y[0] if y is not None and y_dir else None,
                    f"{prefix}{name}/",
                )
            if (x is not None and not x_dir) or (y is not None and not y_dir):
                out.append(prefix + name)

    new_tree = tree_of(new)
    top_a, top_b = _tree_entries(repo, old_tree), _tree_entries(repo, new_tree)
    for root in roots:
        a, b = top_a.get(root), top_b.get(root)
        walk(a[0] if a else None, b[0] if b else None, f"{root}/")
    return out


def _one_line(value: str) -> str:
    return " ".join(str(value).split())


def rollback(path: Path) -> None:
    """Throw away uncommitted changes of an abandoned turn (ignored files such as inbox/ stay)."""
    repo = _repo(path)
    repo.git.reset("-q", "--hard", "HEAD")
    repo.git.clean("-q", "-f", "-d")


def head(path: Path) -> str:
    return _head_sha(_repo(path))


@dataclass(frozen=True)
class LogEntry:
    sha: str
    subject: str
    date: str
    author: str
    body: str
    trailers: dict[str, str] = field(default_factory=dict)

    @property
    def short(self) -> str:
        return self.sha[:8]


def log(
    path: Path, *, limit: int | None = 20, grep: str | Sequence[str] | None = None
) -> list[LogEntry]:
    """Commits newest first, with trailers parsed. Several `grep` patterns match any of them."""
    fmt = _FIELD.join(["%H", "%s", "%aI", "%an", "%b", "%(trailers:only,unfold)"]) + _RECORD
    args = [f"--format={fmt}"]
    if limit is not None:
        args.append(f"-n{limit}")
    if grep:
        args += ["-i", *(f"--grep={g}" for g in ([grep] if isinstance(grep, str) else grep))]
    out = _repo(path).git.log(*args)
    entries = []
    for record in out.split(_RECORD):
        record = record.strip("\n")
        if not record:
            continue
        sha, subject, date, author, body, trailer_text = record.split(_FIELD)
        trailers = {}
        for line in trailer_text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                trailers[key.strip()] = value.strip()
        entries.append(LogEntry(sha, subject, date, author, body, trailers))
    return entries


def show(path: Path, rev: str) -> str:
    """The commit message and its diff, for a person to read."""
    try:
        return _repo(path).git.show("--stat", "--patch", "--format=fuller", rev)
    except git.GitCommandError as exc:
        raise AnimaError(f"no commit {rev!r} in {path.name}: {exc.stderr.strip()}") from exc


def revert(path: Path, rev: str = "HEAD") -> str:
    """Undo a turn with `git revert` (history keeps both). Returns the new commit's sha."""
    repo = _repo(path)
    try:
        repo.git.revert("--no-edit", rev)
    except git.GitCommandError as exc:
        with contextlib.suppress(git.GitCommandError):
            repo.git.revert("--abort")
        raise AnimaError(f"cannot revert {rev!r}: {exc.stderr.strip()}") from exc
    return repo.head.commit.hexsha


def gc_auto(path: Path) -> None:
    """Pack loose objects when git thinks it is time (library commit paths never do)."""
    _repo(path).git.execute(
        ["git", "-C", str(path), "-c", "gc.auto=6700", "gc", "--auto", "--quiet"]
    )


def file_at_head(path: Path, relative: str) -> str:
    """The committed content of a file; KeyError if HEAD does not have it."""
    try:
        blob = _repo(path).head.commit.tree / relative
    except KeyError:
        raise
    data: bytes = blob.data_stream.read()
    return data.decode("utf-8")


def head_has_record(path: Path, subject: str, trailers: Sequence[tuple[str, str]]) -> bool:
    """Is HEAD the commit with this subject and Anima-Message trailer? (crash-recovery check)"""
    message = _repo(path).head.commit.message
    if not isinstance(message, str) or not message.startswith(subject.strip()):
        return False
    wanted = [f"{k}: {_one_line(v)}" for k, v in trailers if k == "Anima-Message"]
    return all(w in message for w in wanted)


def log_text(path: Path, limit: int = 10) -> str:
    """`git log` as a person reads it: subjects, bodies and trailers."""
    return str(_repo(path).git.log(f"-n{limit}", "--format=%C(auto)%h %s%n%b", "--stat=80"))


def added_since(path: Path, since: str | None, under: str) -> tuple[str, list[str]]:
    """Files added under `under` by commits after `since` (all history if None), oldest first,
    and the HEAD they were read at."""
    repo = _repo(path)
    head_sha = _head_sha(repo)
    if since == head_sha:
        return head_sha, []
    rng = [f"{since}..{head_sha}"] if since else [head_sha]
    try:
        out = repo.git.log(
            *rng, "--reverse", "--diff-filter=A", "--name-only", "--format=", "--", under
        )
    except git.GitCommandError:  # `since` is gone (history rewritten): read it all
        out = repo.git.log(
            head_sha, "--reverse", "--diff-filter=A", "--name-only", "--format=", "--", under
        )
    return head_sha, [line for line in out.splitlines() if line.strip()]
