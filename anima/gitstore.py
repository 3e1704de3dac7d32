"""The agent repository: init, the per-agent lock, committing a turn with trailers, the log, undo.

Only this module runs git. Blobs, modes and filters are git's own work: `hash-object` (by path,
so `.gitattributes` and `core.autocrlf` apply) or `update-index`. A turn's tree is edited from
its parent's trees along the touched paths only (the one object Anima serialises itself, checked
against git's `write-tree` in the tests), and anything unusual (directories, symlinks, odd names,
CRs, `core.fileMode=false`) goes through the index instead; the index gets the turn's files before
HEAD moves. A ref moves only from the commit the writer read (`update-ref NEW OLD`), so a
person's own commit made meanwhile is never orphaned. Each git runs in its own session, so a
terminal's Ctrl-C reaches only Anima, never a git that is half-way through writing the index.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import stat
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from anima.errors import AnimaError, Busy

_log = logging.getLogger(__name__)

BOT_EMAIL_DOMAIN = "anima.local"
STALE_LOCK_SECONDS = 120.0
"""Where /proc cannot tell whether a live git holds a lock, one older than this is stale: git
holds its locks for milliseconds (even `git commit` drops index.lock before the editor)."""
LOCK_WAIT_SECONDS = 10.0
"""How long a commit waits for a lock a live git holds (a person's `git add`, say)."""
CAS_RETRIES = 5
_FIELD = "\x1f"
_RECORD = "\x1e"
_KEEP_ENV = ("GIT_CONFIG_NOSYSTEM", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_EXEC_PATH")
_LOCK_BUSY = ("index.lock", ".lock': File exists", "Unable to create", "cannot lock ref")


INDEX_UNREADABLE = (
    "index file corrupt",
    "index file open failed",
    "bad index file",
    "bad signature",
)
"""What git says when it cannot read .git/index (then it is rebuilt from HEAD)."""


class GitFailed(AnimaError):
    """A git command failed; the message carries git's own words."""


def _environment() -> dict[str, str]:
    """The caller's environment without GIT_* variables that would point git elsewhere
    (GIT_DIR, GIT_INDEX_FILE, GIT_WORK_TREE, an author...): a runtime started from a git hook
    must still write the agent's own repository."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in _KEEP_ENV}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_LITERAL_PATHSPECS"] = "1"  # a file named '*' is that file, not a glob
    env["LC_ALL"] = "C"
    return env


def _git(
    path: Path,
    *args: str,
    input: str | bytes | None = None,  # noqa: A002 (subprocess's own name)
    env: Mapping[str, str] | None = None,
) -> str:
    """Run one git command in `path`; its stdout. Raises GitFailed with git's stderr."""
    return _git_bytes(path, *args, input=input, env=env).decode("utf-8", "surrogateescape")


def _git_bytes(
    path: Path,
    *args: str,
    input: str | bytes | None = None,  # noqa: A002
    env: Mapping[str, str] | None = None,
) -> bytes:
    """`_git`, with stdout as git wrote it (tree objects are binary)."""
    data = input.encode("utf-8") if isinstance(input, str) else input
    full_env = _environment()
    if env:
        full_env.update(env)
    if args[0] not in INDEX_FREE and "GIT_INDEX_FILE" not in full_env:
        _INDEX_SYNC.settle(path)
    try:
        proc = subprocess.run(
            ["git", "-C", str(path), *args],
            input=data,
            capture_output=True,
            env=full_env,
            start_new_session=True,  # Ctrl-C in a terminal must not kill a git mid-write
            check=False,
        )
    except OSError as exc:  # E2BIG, ENOMEM, no git at all: a failure of this commit, not a bug
        raise GitFailed(f"git {args[0]} in {path.name}: {exc}") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip() or f"exit {proc.returncode}"
        raise GitFailed(f"git {args[0]} in {path.name}: {err}")
    return proc.stdout


def _git_waiting(path: Path, *args: str, **kw: object) -> str:
    """`_git`, retried while another live git holds a lock (a person's git, or git gc)."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    delay = 0.01
    while True:
        try:
            return _git(path, *args, **kw)  # type: ignore[arg-type]
        except GitFailed as exc:
            moved = " but expected " in str(exc)  # a ref another commit moved: no lock held
            if moved or not any(m in str(exc) for m in _LOCK_BUSY) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


CHUNK = 500
"""Paths per git command line: a turn may name thousands (ARG_MAX is finite)."""


def _chunks(paths: Sequence[str]) -> Iterator[list[str]]:
    for i in range(0, len(paths), CHUNK):
        yield list(paths[i : i + CHUNK])


INDEX_SETTINGS = {
    # An agent's tree grows by two files a turn; these keep index writes and the pre-turn status
    # check proportional to what changed, not to the repo. Index version 4 (paths
    # prefix-compressed) is read by each git process a commit runs in a third of the time of
    # version 2 at 20k files (bench/turn_overhead.py).
    "core.untrackedCache": "true",
    "core.splitIndex": "true",
    "splitIndex.maxPercentChange": "20",
    "index.version": "4",
}
TUNED = "anima-tuned"
TUNING = 2
"""Bumped when INDEX_SETTINGS change: repositories made before are brought up to date once."""


def tune(path: Path) -> str | None:
    """Bring an older agent repository's index settings up to date (once; a marker file
    remembers). Returns what was done, for the log."""
    marker = path / ".git" / TUNED
    try:
        if int(marker.read_text().strip() or 0) >= TUNING:
            return None
    except (FileNotFoundError, ValueError):
        pass
    for key, value in INDEX_SETTINGS.items():
        _git(path, "config", key, value)
    _git_waiting(path, "update-index", "--no-split-index", "--index-version", "4")
    _git_waiting(path, "update-index", "--split-index")
    marker.write_text(f"{TUNING}\n")
    return "index upgraded to version 4 (faster commits on a large repository)"


def _git_version() -> tuple[int, ...]:
    out = subprocess.run(["git", "version"], capture_output=True, text=True, check=True).stdout
    return tuple(int(p) for p in out.split()[2].split(".")[:3] if p.isdigit())


def init_empty(path: Path, name: str, **more: str) -> None:
    """`git init` an agent repository as every agent's is set up (SHA-1, files refs, no
    hooks from a template, the agent's identity, no auto gc, the index settings), with
    `more` config; no commit. For a new agent, a clone and a template's agent alike."""
    args = ["init", "-q", "-b", "main", "--object-format=sha1", "--template="]
    if _git_version() >= (2, 45):
        args.append("--ref-format=files")
    _git(path, *args)
    settings = {
        "user.name": name,
        "user.email": f"{name}@{BOT_EMAIL_DOMAIN}",
        "commit.gpgsign": "false",
        "gc.auto": "0",  # never inside a turn's commit: gc() runs it under the agent lock
        "maintenance.auto": "false",
        **INDEX_SETTINGS,
        **more,
    }
    for key, value in settings.items():
        _git(path, "config", key, value)


def init_repo(path: Path, name: str) -> str:
    """`git init` an agent directory and commit the template. Returns the commit sha.

    The object format (SHA-1) and the ref storage (files) are pinned here, whatever a person's
    `init.defaultObjectFormat` / `init.defaultRefFormat` say: an agent repository must open the
    same way on every machine and with every git it meets."""
    init_empty(path, name)
    (path / ".git" / TUNED).write_text(f"{TUNING}\n")
    _stage_tree(path, ["."])
    return _commit_index(path, f"init({name}): new agent from template", parent=None)


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
        with contextlib.suppress(OSError):  # who holds it is a courtesy; a full disk is not
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        with _INDEX_SYNC.deferred():  # the index is whole again before the lock is let go
            yield
    finally:
        os.close(fd)  # closing releases the flock


def recover(path: Path) -> list[str]:
    """Remove lock files a killed git left (index.lock, HEAD.lock, refs/**.lock,
    packed-refs.lock). Call while holding the agent lock, so no git of ours is running (our gc
    runs under it too). A lock that a live process holds open is a person's git at work and is
    left alone (the commit waits for it). Returns what was removed."""
    _INDEX_SYNC.settle(path)
    git_dir = path / ".git"
    found = [git_dir / n for n in ("index.lock", "HEAD.lock", "packed-refs.lock")]
    found = [p for p in found if p.exists()] + list((git_dir / "refs").rglob("*.lock"))
    if not found:
        return []
    held = _live_locks(path, found)
    removed = []
    for lock in found:
        if lock in held:
            continue
        lock.unlink(missing_ok=True)
        removed.append(str(lock.relative_to(git_dir)))
    return removed


def _live_locks(path: Path, locks: Sequence[Path]) -> set[Path]:
    """Which of the repository's `locks` a live git may still own: all of them while any git
    runs in the repository, else those some process holds open."""
    return set(locks) if _git_running_in(path) else _held_open(locks)


def _git_running_in(path: Path) -> bool:
    """Is some git process at work in this repository (its working directory inside it)? A
    `git commit -a` waiting on its editor holds index.lock without keeping it open."""
    root = str(path.resolve())
    try:
        pids = [d for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv0 = fh.read(256).split(b"\0", 1)[0]
            if not os.path.basename(argv0).startswith(b"git"):
                continue
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + os.sep):
            return True
    return False


def _held_open(paths: Sequence[Path]) -> set[Path]:
    """Which of `paths` some process has open (git keeps a lock file open while it writes).
    Where /proc cannot be read, a lock younger than STALE_LOCK_SECONDS counts as held."""
    wanted = {str(p): p for p in paths}
    held: set[Path] = set()
    try:
        pids = [d for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        cutoff = time.time() - STALE_LOCK_SECONDS
        return {p for p in paths if p.exists() and p.stat().st_mtime > cutoff}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target in wanted:
                    held.add(wanted[target])
    return held


def index_damaged(path: Path) -> str | None:
    """Why `.git/index` cannot be trusted (a torn write, a bad checksum), or None. Reads the
    file once and checks git's own trailing SHA-1; a missing index is damage too."""
    _INDEX_SYNC.settle(path)
    index = path / ".git" / "index"
    try:
        data = index.read_bytes()
    except FileNotFoundError:
        return "the index is missing"
    if len(data) < 32 or data[:4] != b"DIRC":
        return "the index has no valid header"
    if hashlib.sha1(data[:-20]).digest() != data[-20:]:  # noqa: S324 (git's checksum)
        return "the index checksum does not match (a torn or corrupt write)"
    return None


def repair_index(path: Path, *, why: str | None = None) -> str | None:
    """Rebuild a damaged index from HEAD, keeping every working-tree file as it is (the next
    hand-edit check commits what differs). Returns what was done, or None if all was well.
    `why` forces the rebuild (git itself could not read the index: a lost shared index)."""
    why = why or index_damaged(path)
    if why is None:
        return None
    git_dir = path / ".git"
    (git_dir / "index").unlink(missing_ok=True)
    for shared in git_dir.glob("sharedindex.*"):
        shared.unlink(missing_ok=True)
    _git(path, "read-tree", "HEAD")
    with contextlib.suppress(GitFailed):
        _git(path, "update-index", "-q", "--refresh")
    return f"rebuilt .git/index from HEAD ({why})"


RUNTIME_WRITTEN = {"archive", "outbox", "history", "inbox", ".git", ".cache"}
"""Only the runtime writes these (two files a turn; .cache/ is the git-ignored search index), so
the check for hand edits before each turn skips them; a full check runs on start-up and
periodically."""


def _hand_edited(path: Path) -> list[str]:
    return sorted(e for e in os.listdir(path) if e not in RUNTIME_WRITTEN)


def dirty_paths(
    path: Path,
    pathspec: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    *,
    untracked: str = "all",
) -> list[str]:
    """Paths changed since HEAD, untracked included (ignored files excluded; `untracked="no"`:
    tracked files only), as `git status` lists them: a nested repository shows as its directory
    with a trailing slash."""
    out = _git(
        path,
        "status",
        "--porcelain=v1",
        "-z",
        f"--untracked-files={untracked}",
        "--",
        *pathspec,
        env=env,
    )
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


RECORDS = ("archive", "outbox")
"""One file per message, added only by turns, which commit them: the full check does not
look for new files there (at 100k turns that search was half of its `git status`)."""


def _hand_changes(path: Path, spec: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The full check: every tracked file, and new files everywhere but RECORDS."""
    excludes = [p for p in spec if p.startswith(":(exclude")]
    changed = dirty_paths(path, spec, env, untracked="no")
    scope = [e for e in os.listdir(path) if e not in (*RECORDS, ".git")]
    if scope:
        changed += dirty_paths(path, [*scope, *excludes], env)
    return list(dict.fromkeys(changed))


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


IN_PROGRESS = {
    "MERGE_HEAD": "a merge",
    "CHERRY_PICK_HEAD": "a cherry-pick",
    "REVERT_HEAD": "a revert",
    "rebase-merge": "a rebase",
    "rebase-apply": "a rebase or am",
    "BISECT_LOG": "a bisect",
}


class GitBusy(GitFailed):
    """A person's git operation is half-way (a merge with conflicts, a rebase): committing now
    would bake its conflict markers into a turn. Nothing is the messages' fault."""


def operation_in_progress(path: Path) -> str | None:
    """Which git operation a person left half-way in this repository, or None."""
    git_dir = path / ".git"
    for name, what in IN_PROGRESS.items():
        if (git_dir / name).exists():
            return what
    return None


def _check_idle(path: Path) -> None:
    what = operation_in_progress(path)
    if what:
        raise GitBusy(
            f"{what} is in progress in {path}: finish it (resolve, then git commit or "
            "--continue) or abort it; the agent's messages wait until then"
        )


def commit_external(path: Path, *, full: bool = True, exclude: Sequence[str] = ()) -> str | None:
    """Commit whatever a person changed by hand since the last turn, so the log attributes it.
    Without `full`, the runtime's own directories are skipped, and git is not asked at all
    when no hand-editable file changed since the last check (fast on a large repo). `exclude`
    names paths that are not a person's (an interrupted turn's own edits)."""
    stamp = path / ".git" / "anima-checked"
    entries = _hand_edited(path)
    if not full and not _changed_since_check(path, entries):
        return None
    _check_idle(path)
    stamp.touch()  # before the check: an edit made during it is seen next time
    scope = ["."] if full else entries
    spec = [*scope, *(f":(exclude,literal){p}" for p in exclude)]
    magic = {"GIT_LITERAL_PATHSPECS": "0"}  # for the exclusions; each is literal itself
    for _ in range(CAS_RETRIES):
        changed = _hand_changes(path, spec, magic) if full else dirty_paths(path, spec, magic)
        if not changed:
            return None
        parent = head(path)
        _stage_tree(path, spec, nested=[c for c in changed if c.endswith("/")], env=magic)
        shown = ", ".join(c.rstrip("/") for c in changed[:5])
        shown += f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        author = {"GIT_AUTHOR_NAME": "external", "GIT_AUTHOR_EMAIL": f"external@{BOT_EMAIL_DOMAIN}"}
        tree = _git_waiting(path, "write-tree").strip()
        if tree == _git(path, "rev-parse", f"{parent}^{{tree}}").strip():
            return None  # only the index was behind HEAD (a sync a crash cut short)
        try:
            return _commit_index(
                path, f"external: hand edits to {shown}", parent, tree=tree, env=author
            )
        except _HeadMoved:
            continue  # a person committed meanwhile: look again at what is left over theirs
    raise GitFailed(f"{path.name}: HEAD kept moving; gave up after {CAS_RETRIES} tries")


def commit(
    path: Path,
    subject: str,
    *,
    body: str = "",
    trailers: Sequence[tuple[str, str]] = (),
    paths: Sequence[str] = (),
    parent: str | None = None,
    on_object: Callable[[str], None] | None = None,
) -> str:
    """Stage exactly `paths` (additions, edits and deletions; a directory stands for everything
    under it) and commit them on top of `parent` (default: HEAD now). Returns the sha.
    `on_object` hears each commit's sha before HEAD moves to it (the turn record keeps it, so a
    crash right after the move is known to have landed).

    Not `git commit`, which re-stats every tracked file: `update-index` touches only the given
    entries. If HEAD moved past `parent` meanwhile (a person committed by hand), the turn's
    paths are committed on top of theirs instead: nothing of theirs is orphaned."""
    _check_idle(path)
    message = subject.strip()
    if body.strip():
        message += "\n\n" + body.strip()
    if trailers:
        message += "\n\n" + "\n".join(f"{k}: {_one_line(v)}" for k, v in trailers)
    if parent is None:
        parent = head(path)
    entries = _file_entries(path, paths)
    tree = None  # the index git just wrote; after a lost race, a private one on the new HEAD
    if entries is not None:
        # The index gets the turn's files before HEAD moves, as `git commit` would have it: a
        # person's commit made meanwhile, or after a kill, then carries them instead of
        # recording them as deleted. Under the agent lock the sync runs while the trees are
        # edited. (Syncing after the move instead was ~14 ms cheaper at 100k turns.)
        # Removals first: git hashes a file with the .gitattributes the index still holds
        # when the work tree has none, so one removed in this turn must be gone by then.
        gone = [p for p, entry in entries.items() if entry is None]
        _INDEX_SYNC.start(path, gone + [p for p, entry in entries.items() if entry is not None])
        tree = _edit_tree(path, parent, entries)
        _INDEX_SYNC.settle(path)
    if tree is None:
        entries = None
        _stage_paths(path, paths)
    for attempt in range(CAS_RETRIES + 1):
        if attempt:
            _log.warning("%s: HEAD moved to %s; committing on top of it", path.name, parent[:8])
            tree = _edit_tree(path, parent, entries) if entries is not None else None
            tree = tree or _tree_on(path, parent, paths)
        try:
            sha = _commit_index(path, message, parent, tree=tree, on_object=on_object)
        except _HeadMoved as moved:
            parent = moved.now
            continue
        _MADE.put(sha, parent, paths, path)
        return sha
    raise GitFailed(f"{path.name}: HEAD kept moving; gave up after {CAS_RETRIES} tries")


INDEX_FREE = frozenset(
    {
        "cat-file",
        "commit-tree",
        "config",
        "count-objects",
        "diff-tree",
        "fsck",
        "hash-object",
        "log",
        "ls-tree",
        "merge-base",
        "unpack-objects",
        "rev-parse",
        "show",
        "update-ref",
        "version",
    }
)
"""Git commands that neither read nor write `.git/index`: they need not wait for its sync."""


_SYNC_ARGS = ("update-index", "--add", "--remove", "--replace", "-z", "--stdin")


def _nul_separated(paths: Sequence[str]) -> bytes:
    return b"".join(p.encode("utf-8", "surrogateescape") + b"\0" for p in paths)


class _IndexSync:
    """The index catches up with a commit made without it. A turn's tree is built from its
    parent's trees (`_edit_tree`), not from `.git/index`, whose size grows with every turn
    (~35 ms a read at 200k files); `update-index` records the same paths, in the background
    while the trees are edited (under an `agent_lock`), and always before HEAD moves: commit()
    settles it first. Any git that uses the index waits for a running sync (`_git`); a sync
    that failed (a person's git held index.lock) is redone waiting for the lock."""

    def __init__(self) -> None:
        self._running: dict[Path, tuple[subprocess.Popen[bytes], list[str]]] = {}
        self._lock = threading.Lock()
        self._scope = threading.local()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Syncs started in this thread meanwhile may finish in the background until the end."""
        outer = getattr(self._scope, "paths", None)
        self._scope.paths = started = set[Path]()
        try:
            yield
        finally:
            self._scope.paths = outer
            for path in started:
                self.settle(path)

    def start(self, path: Path, paths: Sequence[str]) -> None:
        self.settle(path)
        if not paths:
            return
        names = _nul_separated(paths)
        try:
            proc = subprocess.Popen(
                ["git", "-C", str(path), *_SYNC_ARGS],
                env=_environment(),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            assert proc.stdin is not None
            with proc.stdin:
                proc.stdin.write(names)
        except OSError:
            _git_waiting(path, *_SYNC_ARGS, input=names)
            return
        with self._lock:
            self._running[path] = (proc, list(paths))
        scope = getattr(self._scope, "paths", None)
        if scope is None:
            self.settle(path)
        else:
            scope.add(path)

    def settle(self, path: Path) -> None:
        """Wait for `path`'s index sync, if one runs; redo it if it failed."""
        with self._lock:
            job = self._running.pop(path, None)
        if job is None:
            return
        proc, paths = job
        if proc.wait() != 0:
            _log.info("%s: index sync failed; redoing it", path.name)
            try:
                _git_waiting(path, *_SYNC_ARGS, input=_nul_separated(paths))
            except GitFailed as exc:  # the commit landed: a path git now refuses is left out
                if any(m in str(exc) for m in _LOCK_BUSY):
                    raise
                _stage_each(path, paths, None)


_INDEX_SYNC = _IndexSync()


def _file_entries(path: Path, paths: Sequence[str]) -> dict[str, tuple[str, str] | None] | None:
    """(mode, blob id) for each of `paths` as git would record it, None for a removed file,
    the blobs written by git (`hash-object` applies .gitattributes filters by path). None when
    any path is something else (a directory, a symlink, an ignored or odd name): those go
    through the index."""
    if not paths or any(_odd(p) for p in paths) or not _trusts_file_modes(path):
        return None
    modes: dict[str, str | None] = {}
    dirs: dict[str, bool] = {}  # each ancestor directory: a real one (not a symlink)?
    for rel in paths:
        if not all(_real_dir(path, d, dirs) for d in _ancestors(rel)):
            return None  # git refuses a path beyond a symbolic link; the index path says so
        try:
            st = os.lstat(path / rel)
        except FileNotFoundError:
            modes[rel] = None
            continue
        except NotADirectoryError:
            return None
        if not stat.S_ISREG(st.st_mode) or _has_cr(path / rel, st.st_size):
            return None
        modes[rel] = "100755" if st.st_mode & 0o100 else "100644"
    present = [p for p, m in modes.items() if m is not None]
    try:
        blobs = (
            _git(
                path, "hash-object", "-w", "--stdin-paths", input="\n".join(present) + "\n"
            ).split()
            if present
            else []
        )
    except GitFailed:  # a clean filter failed, a file went away: the index path leaves it out
        return None
    if len(blobs) != len(present):
        return None
    ids = dict(zip(present, blobs, strict=True))
    return {p: (m, ids[p]) if m is not None else None for p, m in modes.items()}


def _ancestors(rel: str) -> Iterator[str]:
    parts = rel.split("/")
    for k in range(1, len(parts)):
        yield "/".join(parts[:k])


def _real_dir(root: Path, rel: str, seen: dict[str, bool]) -> bool:
    """Is `rel` a directory itself, or absent (a removal), but not a symlink or a file?"""
    if rel not in seen:
        try:
            seen[rel] = stat.S_ISDIR(os.lstat(root / rel).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            seen[rel] = True  # gone: a removal; a symlink above it is still looked at
    return seen[rel]


def _has_cr(file: Path, size: int) -> bool:
    """Does the file hold a carriage return? Then git's end-of-line conversion may depend on
    the blob the index has (`text=auto`, `core.autocrlf`: a file committed with CRLF keeps
    them), which `hash-object` does not read: such a file goes through the index."""
    if size == 0:
        return False
    try:  # read, not mmap: a file truncated meanwhile would raise SIGBUS
        with open(file, "rb") as fh:
            while chunk := fh.read(1 << 20):
                if b"\r" in chunk:
                    return True
    except OSError:
        return True
    return False


def _trusts_file_modes(path: Path) -> bool:
    """Whether git takes the executable bit from the file on disk (core.fileMode, true unless a
    person set it false): if not, git keeps the index's mode, and only the index path does too."""
    config = path / ".git" / "config"
    try:
        st = config.stat()
    except OSError:
        return False
    return _file_mode_setting(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=256)
def _file_mode_setting(path: str, _mtime_ns: int, _size: int) -> bool:
    try:
        value = _git(Path(path), "config", "--bool", "--get", "core.fileMode").strip()
    except GitFailed:  # unset: git's default
        return True
    return value != "false"


def _odd(rel: str) -> bool:
    """A path the plain tree edit leaves to git's own staging (which knows every rule)."""
    try:
        rel.encode("utf-8")  # a name that is not UTF-8 (bytes kept as surrogates)
    except UnicodeEncodeError:
        return True
    parts = rel.split("/")
    # hash-object --stdin-paths reads lines: a name ending in CR would name another file
    return any(c in rel for c in '\n\r\t\\"') or any(
        p in ("", ".", "..") or p.lower() == ".git" for p in parts
    )


_TREE = "40000"


def _tree_sort_key(item: tuple[bytes, tuple[str, str]]) -> bytes:
    name, (mode, _sha) = item
    return name + b"/" if mode == _TREE else name


def _read_trees(
    path: Path, commit: str, dirs: Sequence[str]
) -> dict[str, dict[bytes, tuple[str, str]]]:
    """The entries (name → (mode, id)) of each directory of `commit` in `dirs` that exists."""
    specs = [f"{commit}^{{tree}}" if d == "" else f"{commit}:{d}" for d in dirs]
    raw = _git_bytes(path, "cat-file", "--batch", input="\n".join(specs) + "\n")
    out: dict[str, dict[bytes, tuple[str, str]]] = {}
    pos = 0
    for d in dirs:
        nl = raw.index(b"\n", pos)
        header = raw[pos:nl].split()
        pos = nl + 1
        if header[-1] == b"missing" or header[1] != b"tree":
            if header[-1] != b"missing":
                pos += int(header[2]) + 1
            continue
        size = int(header[2])
        body, pos = raw[pos : pos + size], pos + size + 1
        entries: dict[bytes, tuple[str, str]] = {}
        i = 0
        while i < len(body):
            sp = body.index(b" ", i)
            nul = body.index(b"\0", sp)
            entries[body[sp + 1 : nul]] = (body[i:sp].decode(), body[nul + 1 : nul + 21].hex())
            i = nul + 21
        out[d] = entries
    return out


def _edit_tree(path: Path, parent: str, files: Mapping[str, tuple[str, str] | None]) -> str | None:
    """The tree of `parent` with `files` set (or removed), built from the parent's trees
    along their paths only: the cost follows the directories a turn touches
    (month-sharded, so small), not the size of the repository. None when the change does not
    fit a plain edit (a file where the tree has a directory, or the other way round)."""
    dirs = {""}
    for rel in files:
        parts = rel.split("/")
        dirs |= {"/".join(parts[:k]) for k in range(1, len(parts))}
    order = sorted(dirs, key=lambda d: (d.count("/") + (d != ""), d))
    trees = _read_trees(path, parent, order)
    if "" not in trees:
        return None
    for d in order:
        trees.setdefault(d, {})
    for rel, entry in files.items():
        d, _, name = rel.rpartition("/")
        node = trees[d]
        old = node.get(name.encode())
        if old is not None and old[0] in (_TREE, "160000"):
            return None
        if entry is None:
            node.pop(name.encode(), None)
        else:
            node[name.encode()] = entry
    bodies: list[bytes] = []
    root = ""
    for d in reversed(order):  # deepest first: a parent needs its children's ids
        node = trees[d]
        if d and not node:
            trees[d.rpartition("/")[0]].pop(d.rpartition("/")[2].encode(), None)
            continue
        items = sorted(node.items(), key=_tree_sort_key)
        body = b"".join(m.encode() + b" " + n + b"\0" + bytes.fromhex(h) for n, (m, h) in items)
        root = hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()  # noqa: S324 (git's id)
        bodies.append(body)
        if d:
            parent_dir, _, name = d.rpartition("/")
            existing = trees[parent_dir].get(name.encode())
            if existing is not None and existing[0] != _TREE:
                return None
            trees[parent_dir][name.encode()] = (_TREE, root)
    _git(path, "unpack-objects", "-q", input=_pack(2, bodies))
    return root


def _pack(kind: int, bodies: Sequence[bytes]) -> bytes:
    """A pack stream of whole objects of one `kind` (2: tree), for `git unpack-objects` to
    write. One git for all of a turn's trees; `git mktree` would look up every entry's type,
    reading the pack once per file of the month (~20 ms at 100k turns)."""
    out = bytearray(b"PACK" + (2).to_bytes(4, "big") + len(bodies).to_bytes(4, "big"))
    for body in bodies:
        n = len(body)
        byte = (kind << 4) | (n & 0x0F)
        n >>= 4
        while n:
            out.append(byte | 0x80)
            byte, n = n & 0x7F, n >> 7
        out.append(byte)
        out += zlib.compress(body, 1)
    return bytes(out) + hashlib.sha1(out).digest()  # noqa: S324 (the pack's checksum)


_STAGE = ("update-index", "--add", "--remove", "--replace")
"""As `git add` stages a file: a file that replaced a directory (or the other way round)
replaces the entries it conflicts with."""


def _stage_paths(path: Path, paths: Sequence[str], env: Mapping[str, str] | None = None) -> None:
    """Bring `paths` into the index as git would commit them. Files go through `update-index`
    (blob ids and modes by git, filters applied); directories through `git add -A`, after
    flattening any nested repository in them."""
    dirs = [p for p in paths if (path / p).is_dir() and not (path / p).is_symlink()]
    files = [p for p in paths if p not in dirs]
    for chunk in _chunks(files):
        try:
            _git_waiting(path, *_STAGE, "--", *chunk, env=env)
        except GitFailed as exc:
            if any(m in str(exc) for m in _LOCK_BUSY):
                raise
            _stage_each(path, chunk, env)
    if dirs:
        _stage_tree(path, dirs, env=env)


def _stage_each(path: Path, files: Sequence[str], env: Mapping[str, str] | None) -> None:
    """One by one, leaving out what git refuses to record (a path through a symlink, a name
    git reserves): one odd path must not leave the repository unable to commit."""
    for rel in files:
        try:
            _git_waiting(path, *_STAGE, "--", rel, env=env)
        except GitFailed as exc:
            if any(m in str(exc) for m in _LOCK_BUSY):
                raise  # not the path's fault: the whole commit waits for another day
            _log.warning("%s: not committing %r: %s", path.name, rel, exc)


def _stage_tree(
    path: Path,
    spec: Sequence[str],
    *,
    nested: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """`git add -A` for whole directories. A repository made inside the agent's repository (an
    agent's `git init` in workspace/) would be recorded as a gitlink with none of its content:
    its files are added as plain files instead (its own .git stays out). If git refuses a name
    in there (`.GIT`, say), everything else is staged one by one and that name left out."""
    if nested is None:
        nested = [p for p in dirty_paths(path, spec, env) if p.endswith("/")]
    for sub in nested:
        inner = _files_of_nested(path, sub.rstrip("/"))
        if inner:
            with contextlib.suppress(GitFailed):  # a gitlink an older commit recorded
                _git(path, "update-index", "--force-remove", "--", sub.rstrip("/"), env=env)
            _stage_paths(path, inner, env)
            _log.info(
                "%s: %s is a git repository; its files are committed as plain files", path.name, sub
            )
    excludes = [p for p in spec if p.startswith(":(exclude")]
    scopes = [p for p in spec if not p.startswith(":(exclude")]
    try:
        for chunk in _chunks(scopes):
            _git_waiting(path, "add", "-A", "--", *chunk, *excludes, env=env)
    except GitFailed as exc:
        if any(m in str(exc) for m in _LOCK_BUSY):
            raise
        _log.warning("%s: git add refused a path (%s); staging one by one", path.name, exc)
        _stage_each(path, [p for p in dirty_paths(path, spec, env) if not p.endswith("/")], env)


def _files_of_nested(path: Path, sub: str) -> list[str]:
    out = []
    for root, dirs, files in os.walk(path / sub):
        dirs[:] = [d for d in dirs if d.lower() != ".git"]
        rel = os.path.relpath(root, path)
        out += [os.path.join(rel, f) for f in files if f.lower() != ".git"]
    return out


class _HeadMoved(Exception):
    """HEAD is no longer the commit a commit was built on (a person committed meanwhile)."""

    def __init__(self, now: str):
        super().__init__(now)
        self.now = now


def _commit_index(
    path: Path,
    message: str,
    parent: str | None,
    *,
    tree: str | None = None,
    env: Mapping[str, str] | None = None,
    on_object: Callable[[str], None] | None = None,
) -> str:
    """Commit `tree` (default: the index, as git writes it) on `parent` and move HEAD from
    `parent` to it: a compare-and-swap. Raises _HeadMoved when HEAD is elsewhere now."""
    if tree is None:
        tree = _git_waiting(path, "write-tree", env=env).strip()
    args = ["commit-tree", "--no-gpg-sign", tree, "-F", "-"]
    if parent:
        args[2:2] = ["-p", parent]
    sha = _git(path, *args, input=message + "\n", env=env).strip()
    if on_object is not None:
        on_object(sha)
    try:
        _git_waiting(
            path,
            "update-ref",
            "-m",
            f"commit: {message.splitlines()[0][:60]}",
            "HEAD",
            sha,
            parent or "0" * 40,
        )
    except GitFailed:
        now = head(path)
        if now == parent:
            raise
        raise _HeadMoved(now) from None
    return sha


def _private_index(path: Path, name: str) -> tuple[Path, dict[str, str]]:
    private = path / ".git" / f"anima-index.{name}.{os.getpid()}"
    # A whole index, not a split one: a throwaway index must not leave shared-index files.
    env = {"GIT_INDEX_FILE": str(private), "GIT_CONFIG_COUNT": "1"}
    env |= {"GIT_CONFIG_KEY_0": "core.splitIndex", "GIT_CONFIG_VALUE_0": "false"}
    return private, env


def _tree_on(path: Path, base: str, paths: Sequence[str]) -> str:
    """The tree of `base` with `paths` staged from the working tree, built in a private index
    so the person's index is not touched."""
    private, env = _private_index(path, "cas")
    try:
        _git(path, "read-tree", base, env=env)
        _stage_paths(path, paths, env=env)
        return _git(path, "write-tree", env=env).strip()
    finally:
        private.unlink(missing_ok=True)


def snapshot(path: Path, paths: Sequence[str]) -> str:
    """The tree of HEAD with `paths` as they are in the working tree now (written to git's
    object store, the person's index untouched): a pre-image to go back to."""
    return _tree_on(path, head(path), paths)


def restore(path: Path, rel: str, tree: str) -> list[str]:
    """Make everything under `rel` as it is in `tree` again (a snapshot): what changed since is
    checked out of it, what was added since is removed. Files git ignores are left alone.
    Returns the paths put back."""
    now = snapshot(path, [rel])
    out = _git(path, "diff-tree", "-r", "-z", "--no-renames", "--name-status", tree, now, "--", rel)
    fields = out.split("\0")
    changed = list(zip(fields[0::2], fields[1::2], strict=False))
    gone = [p for status, p in changed if status == "A"]
    back = [p for status, p in changed if status != "A" and p]
    for rel_path in gone:
        (path / rel_path).unlink(missing_ok=True)
    if back:
        private, env = _private_index(path, "restore")
        try:
            _git(path, "read-tree", tree, env=env)
            for chunk in _chunks(back):
                _git(path, "checkout-index", "-f", "-q", "--", *chunk, env=env)
        finally:
            private.unlink(missing_ok=True)
    return sorted(gone + back)


def save_aside(path: Path, paths: Sequence[str], why: str) -> str | None:
    """Keep the working-tree state of `paths` as a commit on `refs/anima/abandoned/<time>`
    before they are put back, so nothing a rollback discards is beyond recovery. Returns the
    ref, or None when nothing differs from HEAD."""
    if not paths:
        return None
    base = head(path)
    tree = _tree_on(path, base, paths)
    if tree == _git(path, "rev-parse", f"{base}^{{tree}}").strip():
        return None
    sha = _git(path, "commit-tree", "--no-gpg-sign", tree, "-p", base, "-F", "-", input=why + "\n")
    ref = f"refs/anima/abandoned/{time.strftime('%Y%m%dT%H%M%S')}-{sha[:8]}"
    _git(path, "update-ref", ref, sha.strip())
    return ref


class _Made:
    """The commits this process made, each with its parent and the file paths it staged: the
    next turn's search refresh learns what changed without asking git (a small LRU)."""

    def __init__(self, size: int = 256):
        self._size = size
        self._data: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._lock = threading.Lock()

    def put(self, sha: str, parent: str | None, paths: Sequence[str], root: Path) -> None:
        if parent is None or any((root / p).is_dir() for p in paths):
            return  # a directory stands for files this process did not list
        with self._lock:
            if len(self._data) >= self._size:
                self._data.pop(next(iter(self._data)))
            self._data[sha] = (parent, tuple(paths))

    def between(self, old: str, new: str) -> list[str] | None:
        """The paths from `old` to `new` if every commit between was made here, else None."""
        out: list[str] = []
        with self._lock:
            for _ in range(len(self._data)):
                if new == old:
                    return out
                step = self._data.get(new)
                if step is None:
                    return None
                new, paths = step[0], step[1]
                out += paths
        return out if new == old else None


_MADE = _Made()


def changed_between(path: Path, old: str, new: str, roots: Sequence[str]) -> list[str] | None:
    """Files under `roots` that differ between commits `old` and `new` (git descends only
    into subtrees whose ids differ). None when `old` is not in the repository. When this
    process made every commit in between, it knows the paths without asking git."""
    known = _MADE.between(old, new)
    if known is not None:
        return sorted({p for p in known if any(p.startswith(r.rstrip("/") + "/") for r in roots)})
    try:
        out = _git(
            path, "diff-tree", "-r", "-z", "--no-renames", "--name-only", old, new, "--", *roots
        )
    except GitFailed:
        return None
    return [p for p in out.split("\0") if p]


def _one_line(value: str) -> str:
    return " ".join(str(value).split())


def rollback(path: Path, paths: Sequence[str]) -> list[str]:
    """Put `paths` back as HEAD has them, or away if HEAD does not have them (for the files only
    the runtime writes: outbox records, history, archive moves). Returns the paths."""
    if not paths:
        return []
    tracked: set[str] = set()
    for chunk in _chunks(paths):
        out = _git(path, "ls-tree", "-r", "-z", "--name-only", "HEAD", "--", *chunk)
        tracked |= set(out.split("\0")) - {""}
    for rel in paths:
        target = path / rel
        if target.is_dir() and not target.is_symlink():
            with contextlib.suppress(GitFailed):  # untracked files the turn made in it
                _git(path, "clean", "-q", "-f", "-d", "--", rel)
        elif rel not in tracked and (target.exists() or target.is_symlink()):
            target.unlink()
    for chunk in _chunks(sorted(tracked)):
        _git_waiting(path, "checkout", "HEAD", "--", *chunk)
    return sorted(paths)


def landed(path: Path, sha: str) -> bool:
    """Is commit `sha` in HEAD's history (a turn's commit that a crash cut short after the ref
    moved, even if a person has committed on top since)?"""
    try:
        _git(path, "merge-base", "--is-ancestor", sha, "HEAD")
    except GitFailed:
        return False
    return True


def head(path: Path) -> str:
    """HEAD's sha, read from the ref files (no git process); git's answer if that fails."""
    git_dir = path / ".git"
    try:
        ref = (git_dir / "HEAD").read_text().strip()
        if not ref.startswith("ref: "):
            return ref
        name = ref[5:]
        try:
            return (git_dir / name).read_text().strip()
        except FileNotFoundError:
            for line in (git_dir / "packed-refs").read_text().splitlines():
                if line.endswith(" " + name):
                    return line.split()[0]
    except (OSError, IndexError):
        pass
    try:
        return _git(path, "rev-parse", "--verify", "-q", "HEAD").strip()
    except GitFailed:
        raise GitFailed(
            f"{path.name}: HEAD has no commit (an orphan branch, or a repository without "
            f"history): check out the agent's branch in {path} (git checkout main)"
        ) from None


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
    out = _git(path, "log", *args)
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
        entries.append(LogEntry(sha, subject, date, author, body.strip("\n"), trailers))
    return entries


def show(path: Path, rev: str) -> str:
    """The commit message and its diff, for a person to read."""
    try:
        return _git(path, "show", "--stat", "--patch", "--format=fuller", rev).rstrip("\n")
    except GitFailed as exc:
        raise AnimaError(f"no commit {rev!r} in {path.name}: {exc}") from exc


def revert(path: Path, rev: str = "HEAD") -> str:
    """Undo a turn with `git revert` (history keeps both). Returns the new commit's sha."""
    try:
        _git_waiting(path, "revert", "--no-edit", rev)
    except GitFailed as exc:
        with contextlib.suppress(GitFailed):
            _git(path, "revert", "--abort")
        raise AnimaError(f"cannot revert {rev!r}: {exc}") from exc
    return head(path)


GC_LOOSE = 6700
"""Loose objects (about 700 turns) that make gc() pack them: git's own gc.auto default."""


def gc(path: Path, *, loose_limit: int = GC_LOOSE) -> str:
    """Pack loose objects once there are `loose_limit` of them (plumbing commits never do).
    Call under the agent lock. Returns a line for the log.

    A geometric repack (`repack --geometric=2`): the loose objects and the packs smaller than
    twice them become one pack, so the work follows what is new, and the packs stay few (each
    at least twice the next), in the foreground, so the agent's lock covers it. `git gc --auto`
    detaches itself (gc.autoDetach), running outside the lock, walks every object for `prune`
    and every 50 packs rewrites all of them (38 s at 100k turns)."""

    def loose() -> int:
        out = _git(path, "count-objects", "-v")
        return next(
            (int(line.split()[1]) for line in out.splitlines() if line.startswith("count:")), 0
        )

    before, t0 = loose(), time.monotonic()
    if before < loose_limit:
        return f"gc: {before} loose objects, nothing to pack yet"
    _git(path, "repack", "-d", "-l", "-q", "--geometric=2")
    after = loose()
    ms = (time.monotonic() - t0) * 1000
    return f"gc packed {before - after} loose objects in {ms:.0f} ms"


def file_at_head(path: Path, relative: str) -> str:
    """The committed content of a file; KeyError if HEAD does not have it."""
    try:
        return _git(path, "cat-file", "blob", f"HEAD:{relative}")
    except GitFailed:
        raise KeyError(relative) from None


def head_has_record(path: Path, subject: str, trailers: Sequence[tuple[str, str]]) -> bool:
    """Is HEAD the commit with this subject and Anima-Message trailer? (crash-recovery check)"""
    message = _git(path, "log", "-1", "--format=%B", "HEAD")
    if not message.startswith(subject.strip()):
        return False
    wanted = [f"{k}: {_one_line(v)}" for k, v in trailers if k == "Anima-Message"]
    return all(w in message for w in wanted)


def log_text(path: Path, limit: int = 10) -> str:
    """`git log` as a person reads it: subjects, bodies and trailers."""
    return _git(path, "log", f"-n{limit}", "--format=%h %s%n%b", "--stat=80").rstrip("\n")


def added_since(path: Path, since: str | None, under: str) -> tuple[str, list[str]]:
    """Files added under `under` by commits after `since` (all history if None), oldest first,
    and the HEAD they were read at."""
    head_sha = head(path)
    if since == head_sha:
        return head_sha, []
    rng = [f"{since}..{head_sha}"] if since else [head_sha]
    tail = ["--reverse", "--diff-filter=A", "--name-only", "--format=", "--", under]
    try:
        out = _git(path, "log", *rng, *tail)
    except GitFailed:  # `since` is gone (history rewritten): read it all
        out = _git(path, "log", head_sha, *tail)
    return head_sha, [line for line in out.splitlines() if line.strip()]


def health(path: Path) -> list[str]:
    """What is wrong with an agent repository, for `anima doctor` (empty: healthy)."""
    problems = []
    busy = operation_in_progress(path)
    if busy:
        problems.append(
            f"{busy} is in progress: nothing is committed and messages wait until you finish "
            "it (resolve, then git commit or --continue) or abort it"
        )
    why = index_damaged(path)
    if why:
        problems.append(f"{why}; the runtime rebuilds it from HEAD on start")
    try:
        _git(path, "fsck", "--connectivity-only", "--no-progress", "--no-dangling")
    except GitFailed as exc:
        problems.append(f"git fsck: {exc}")
    locks = list((path / ".git").glob("*.lock"))
    held = _live_locks(path, locks)
    problems += [f"stale lock {p.name} (removed at the next turn)" for p in locks if p not in held]
    return problems
