"""Fetching a stranger's git repository safely: URL specs, the git command line, tree checks.

Agent templates, skills and marketplace indexes come from git URLs a person pastes. Each is a
stranger's repository, so: a URL may not start with '-' (git would read an option) and goes
after `--`; only the ordinary transports are allowed (never `ext::`); objects are fsck'd as they
arrive; submodules are never fetched; no prompt waits for a password. A tree is checked from its
listing (`ls-tree`) before any file of it is written: no symlinks, no submodules, no `.git`
names, no `..`, nothing too large. Nothing from the repository is ever run.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from anima.errors import BadSource

TRANSPORTS = ("https", "http", "ssh", "git", "file")
SAFE_CONFIG = (
    "protocol.allow=never",
    *(f"protocol.{t}.allow=always" for t in TRANSPORTS),
    "transfer.fsckObjects=true",
    "fetch.recurseSubmodules=false",
    "submodule.recurse=false",
    "core.symlinks=false",
    "advice.detachedHead=false",
)
"""`-c` settings for every git command here (on the command line: over a person's own config)."""
TREE_MAX_FILES = 5000
TREE_MAX_BYTES = 64 * 1024 * 1024
FILE_MAX_BYTES = 16 * 1024 * 1024
GIT_NAMES = frozenset({".git", ".gitmodules", ".gitattributes"})
"""Names refused anywhere in a tree: git's own directory, and the files that would make git
fetch submodules or filter and merge files the repository's way."""


@dataclass(frozen=True)
class Source:
    """Where something comes from: a git URL, a ref (empty: the remote's HEAD), a folder."""

    url: str
    ref: str = ""
    path: str = ""

    def __str__(self) -> str:
        return (
            self.url + (f"#{self.ref}" if self.ref else "") + (f":{self.path}" if self.path else "")
        )

    @property
    def fetch_ref(self) -> str:
        return self.ref or "HEAD"


def parse(spec: str, *, with_path: bool = False) -> Source:
    """`URL[#ref]` (with `with_path`: `URL[#ref][:path]`). A `:path` is recognised after the
    repository's own path (`/srv/skills.git:pdf`, `https://h/r.git#v1:skills/pdf`), never in
    `host:port` or scp's `host:repo`. A local path becomes absolute. Raises BadSource."""
    url, ref, path = spec.strip(), "", ""
    if "#" in url:
        url, ref = url.rsplit("#", 1)
        if with_path and ":" in ref:
            ref, path = ref.split(":", 1)
    if with_path and not path:
        rest = url.split("://", 1)[-1]
        before, colon, after = rest.rpartition(":")
        if colon and "/" in before and after:
            url, path = url[: len(url) - len(after) - 1], after
    check_url(url)
    if ref.startswith("-") or any(c in ref for c in " ~^:?*[\\") or ".." in ref:
        raise BadSource(f"{ref!r} is not a branch, tag or commit name")
    if path:
        path = check_path(path.strip("/"), "the folder after ':'")
    if "://" not in url and not _scp_like(url):
        url = str(Path(url).expanduser().resolve())
    return Source(url, ref, path)


def _scp_like(url: str) -> bool:
    host, colon, _ = url.partition(":")
    return bool(colon) and "/" not in host and not Path(url).exists()


def check_url(url: str) -> str:
    """Refuse what git would read as an option or a dangerous transport."""
    if not url:
        raise BadSource("no git URL given")
    if url.startswith("-"):
        raise BadSource(f"{url!r} is not a git URL: it starts with '-' (git would read an option)")
    if any(ord(c) < 32 for c in url):
        raise BadSource(f"{url!r} is not a git URL: it holds control characters")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme and scheme not in TRANSPORTS:
        raise BadSource(f"{url}: only {', '.join(TRANSPORTS)} URLs are allowed")
    if "::" in url.split("/", 1)[0]:
        raise BadSource(f"{url}: transport helpers (x::...) are not allowed")
    return url


def check_path(path: str, what: str) -> str:
    """A relative POSIX path inside a repository, without `..`, `.git` names or odd bytes."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute():
        raise BadSource(f"{what} {path!r} must be a relative path")
    for part in pure.parts:
        if part in ("..", ".") or any(ord(c) < 32 or c == "\\" for c in part):
            raise BadSource(f"{what} {path!r} has a '..', '.' or an odd character in it")
        if _git_name(part):
            raise BadSource(f"{what} {path!r} names git's own files ({part!r})")
    return str(pure)


def _git_name(part: str) -> bool:
    bare = part.lower().rstrip(". ")
    return bare in GIT_NAMES or bare.startswith("git~")


def environment() -> dict[str, str]:
    """The caller's environment minus GIT_* variables that would point git elsewhere; never a
    password prompt."""
    keep = ("GIT_CONFIG_NOSYSTEM", "GIT_CONFIG_GLOBAL", "GIT_SSH_COMMAND", "GIT_SSH")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in keep}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    return env


def git(
    where: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    ok: Sequence[int] = (0,),
    input: bytes | None = None,  # noqa: A002 (subprocess's own name)
) -> str:
    """Run git in `where` with SAFE_CONFIG; stdout. Raises BadSource with git's own words."""
    config = [a for c in SAFE_CONFIG for a in ("-c", c)]
    full_env = environment() | dict(env or {})
    try:
        proc = subprocess.run(
            ["git", *config, "-C", str(where), *args],
            input=input,
            capture_output=True,
            env=full_env,
            start_new_session=True,
            check=False,
            timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BadSource(f"git {args[0]}: {exc}") from exc
    if proc.returncode not in ok:
        err = proc.stderr.decode("utf-8", "replace").strip() or f"exit {proc.returncode}"
        raise BadSource(f"git {args[0]} failed: {err[-2000:]}")
    return proc.stdout.decode("utf-8", "surrogateescape")


def fetch(repo: Path, url: str, ref: str, *, depth: int | None = None) -> str:
    """Fetch `ref` of `url` (a URL or a remote's name) into `repo`; the commit's sha. Raises
    BadSource saying what failed (no such ref, unreachable host, a bad object)."""
    check_url(url)
    shallow = [f"--depth={depth}"] if depth else []
    args = ["fetch", "-q", "--no-tags", "--no-recurse-submodules", *shallow, "--", url, ref]
    try:
        git(repo, *args)
    except BadSource as exc:
        raise BadSource(f"cannot fetch {ref} from {url}: {exc}") from None
    return git(repo, "rev-parse", "--verify", "FETCH_HEAD^{commit}").strip()


def enclosing_repository(path: Path) -> Path | None:
    """The work tree of the git repository that `path` is a folder of (not `path` itself: that
    is a repository of its own), found by looking for `.git` in its parents; None if none.
    Nothing is run: the enclosing repository may be a stranger's."""
    if (path / ".git").exists():
        return None
    return next((p for p in path.parents if (p / ".git").exists()), None)


def init_bare(path: Path) -> Path:
    """An empty bare repository to fetch a stranger's objects into (no hooks: --template=)."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "--bare", "--template=")
    return path


@dataclass(frozen=True)
class Entry:
    """One file of a tree, as `ls-tree -r --long` lists it."""

    path: str
    mode: str
    sha: str
    size: int

    @property
    def executable(self) -> bool:
        return self.mode == "100755"


def list_tree(repo: Path, treeish: str) -> list[Entry]:
    """Every entry of a tree, recursively (symlinks and submodules included, to be refused)."""
    out = git(repo, "ls-tree", "-r", "-z", "--long", "--full-tree", treeish)
    entries = []
    for record in out.split("\0"):
        if not record:
            continue
        meta, _, path = record.partition("\t")
        mode, _kind, sha, size = meta.split()
        entries.append(Entry(path, mode, sha, int(size) if size.isdigit() else 0))
    return entries


def check_tree(entries: Sequence[Entry], what: str) -> None:
    """Refuse a tree that could hurt once written out: symlinks (they can lead anywhere),
    submodules, git's own names, `..`, odd bytes, too many or too large files."""
    if len(entries) > TREE_MAX_FILES:
        raise BadSource(f"{what} has {len(entries)} files; the limit is {TREE_MAX_FILES}")
    total = 0
    for e in entries:
        check_path(e.path, f"{what}: path")
        if e.mode == "120000":
            raise BadSource(f"{what}: {e.path} is a symlink; symlinks are refused (copy the file)")
        if e.mode == "160000":
            raise BadSource(f"{what}: {e.path} is a submodule; submodules are refused")
        if e.mode not in ("100644", "100755"):
            raise BadSource(f"{what}: {e.path} has an unknown mode {e.mode}")
        if e.size > FILE_MAX_BYTES:
            raise BadSource(f"{what}: {e.path} is {e.size} bytes; the limit is {FILE_MAX_BYTES}")
        total += e.size
    if total > TREE_MAX_BYTES:
        raise BadSource(f"{what} holds {total} bytes; the limit is {TREE_MAX_BYTES}")


def blob(repo: Path, sha: str) -> bytes:
    """A blob's bytes (a file of a fetched tree, read without writing it out)."""
    proc = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "blob", sha],
        capture_output=True,
        env=environment(),
        check=False,
    )
    if proc.returncode:
        raise BadSource(f"cannot read object {sha}: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def export(repo: Path, tree: str, target: Path) -> None:
    """Write a checked tree's files under `target` (git's checkout-index, through a private
    index: the repository's own index and work tree are not touched)."""
    target.mkdir(parents=True, exist_ok=True)
    index = target.parent / f".{target.name}.index"
    env = {"GIT_INDEX_FILE": str(index)}
    try:
        git(repo, "read-tree", tree, env=env)
        git(repo, f"--work-tree={target}", "checkout-index", "-a", "-f", env=env)
    finally:
        index.unlink(missing_ok=True)


def diff_stat(old: Path, new: Path) -> str:
    """`git diff --stat` between two folders (or files) on disk; empty when they are equal."""
    return _no_index(old, new, "--stat")


def diff(old: Path, new: Path) -> str:
    """A unified diff between two files (or folders) on disk; empty when they are equal."""
    return _no_index(old, new)


def _no_index(old: Path, new: Path, *extra: str) -> str:
    common = os.path.commonpath([old, new])
    a, b = os.path.relpath(old, common), os.path.relpath(new, common)
    args = ["diff", "--no-index", "--no-color", "--no-ext-diff", *extra, "--", a, b]
    return git(Path(common), *args, ok=(0, 1))
