"""The lease: an agent runs on one host at a time, and git decides which (DESIGN §7a).

The lease is a ref on the agent's remote, `refs/anima/lease`, pointing at a small commit (an
empty tree) whose message names the holder host and an expiry. It is taken and renewed only by
a compare-and-swap push (`--force-with-lease=refs/anima/lease:<sha seen>`): the remote's
receive-pack moves the ref only from the value this host read, so of two hosts racing, one
wins and the other learns who did. No coordination service of our own.

Each host keeps what it knows in `run/leases/NAME.json`, so the check before a turn reads one
small file and asks no network while the lease is held and not near expiry; the remote is
asked only when the lease is missing, near its end, or held elsewhere (then at most every
RECHECK seconds). A move in progress (`moving`) and a finished move (`moved`) are local states
that stop turns here whatever the clock says.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import subprocess
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from anima import gitstore
from anima.errors import AnimaError
from anima.fsutil import write_atomic
from anima.home import Home
from anima.peer import this_host

log = logging.getLogger(__name__)
T = TypeVar("T")

REF = "refs/anima/lease"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
GIT_TIMEOUT = 60.0
"""Seconds a network git command (push, fetch, ls-remote) may take before it counts as failed."""
RECHECK = 10.0
"""How often a host that does not hold an agent's lease asks the remote again."""
MARGIN = 0.25
"""Turns stop when less than this share of the lease is left and it could not be renewed:
the other host's clock may be a little ahead of ours."""


class RemoteError(AnimaError):
    """A git remote could not be reached or refused what was asked; git's own words."""


class LeaseRefused(AnimaError):
    """Another host holds the agent's lease (or the agent was moved away from here)."""


def git(repo: Path, *args: str, input: bytes | None = None, timeout: float = GIT_TIMEOUT) -> str:  # noqa: A002
    """Run git in `repo` for a remote operation: no prompt, no `ext::` transport, a timeout.
    Raises RemoteError with git's words."""
    cmd = ["git", "-c", "protocol.ext.allow=never", "-c", "core.askPass=true", "-C", str(repo)]
    try:
        proc = subprocess.run(
            [*cmd, *args],
            input=input,
            capture_output=True,
            env=gitstore._environment(),
            start_new_session=True,
            check=False,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RemoteError(f"git {args[0]} in {repo.name}: {exc}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip() or f"exit {proc.returncode}"
        raise RemoteError(f"git {args[0]} in {repo.name}: {err[-1000:]}")
    return proc.stdout.decode("utf-8", "surrogateescape")


def check_url(url: str) -> str:
    """Refuse what git would read as an option or run as a program."""
    if not url or url.startswith("-"):
        raise RemoteError(f"{url!r} is not a git URL (empty, or starts with '-')")
    if any(ord(c) < 32 for c in url) or "::" in url.split("/", 1)[0]:
        raise RemoteError(f"{url[:80]!r} is not a git URL (control characters or a transport helper)")
    return url


@dataclass(frozen=True)
class Lease:
    """What a host knows of an agent's lease. `state`: held (by `holder` until `expires`),
    moving (a move by process `pid` to `to_host` is under way here), moved (to `to_host`,
    through peer `to_peer`: turns never run here again unless it is moved back)."""

    holder: str = ""
    expires: float = 0.0
    sha: str = ""
    url: str = ""
    state: str = "held"
    to_host: str = ""
    to_peer: str = ""
    pid: int = 0
    checked: float = 0.0

    def valid_for(self, host: str, now: float) -> bool:
        return self.state == "held" and self.holder == host and self.expires > now

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if self.state == "moved":
            return f"moved to {self.to_host} (peer {self.to_peer})"
        if self.state == "moving":
            return f"moving to {self.to_host} (peer {self.to_peer})"
        if not self.holder:
            return "no lease yet"
        left = self.expires - now
        when = f"for {left:.0f}s" if left > 0 else f"expired {-left:.0f}s ago"
        return f"held by {self.holder} {when}"


def _path(home: Home, name: str) -> Path:
    return home.run_dir / "leases" / f"{name}.json"


def _record(path: Path, cls: type[T]) -> T | None:
    """A small JSON record of dataclass `cls` under run/; None when it is missing or damaged
    (not an object, a field of the wrong type, a number that is not finite): the caller then
    asks the remote again, as if there were none."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    hints = {f.name: type(f.default) for f in fields(cls)}  # type: ignore[arg-type]
    values = {}
    for key, value in data.items():
        if key not in hints:
            continue
        want = hints[key]
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not want or (isinstance(value, float) and not math.isfinite(value)):
            return None
        values[key] = value
    return cls(**values)


def load(home: Home, name: str) -> Lease | None:
    """This host's record of `name`'s lease; None when it never had one (or it is damaged)."""
    return _record(_path(home, name), Lease)


def save(home: Home, name: str, lease: Lease) -> Lease:
    write_atomic(_path(home, name), json.dumps(asdict(lease), indent=1) + "\n")
    return lease


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- what this host pushed ----------------------------------------------------------------------
@dataclass(frozen=True)
class PushState:
    url: str = ""
    pushed: str = ""
    error: str = ""
    attempts: int = 0
    next_try: float = 0.0
    at: float = 0.0


def push_path(home: Home, name: str) -> Path:
    return home.run_dir / "pushes" / f"{name}.json"


def push_state(home: Home, name: str) -> PushState:
    return _record(push_path(home, name), PushState) or PushState()


def save_push(home: Home, name: str, st: PushState) -> None:
    write_atomic(push_path(home, name), json.dumps(st.__dict__) + "\n", durable=False)


def status_line(home: Home, name: str) -> dict[str, Any] | None:
    """For `anima status`: what this host last pushed of `name` and its lease, from the local
    records alone (no config, no git beyond HEAD's ref file, no network); None when it has
    neither. `runs_here`: the lease record lets turns run here now."""
    known = load(home, name)
    pushed = push_state(home, name)
    if known is None and not pushed.url:
        return None
    try:
        behind = pushed.pushed != gitstore.head(home.agents_dir / name)
    except gitstore.GitFailed:
        behind = False
    held = known is not None and known.valid_for(this_host(home), time.time())
    return {"url": pushed.url or (known.url if known else ""), "behind": behind,
            "error": pushed.error, "lease": known.describe() if known else "no lease yet",
            "runs_here": held}


# -- the ref on the remote ---------------------------------------------------------------------
def read_remote(repo: Path, url: str) -> Lease | None:
    """The lease on the remote now (holder, expiry, sha); None when there is none."""
    out = git(repo, "ls-remote", "--", check_url(url), REF)
    sha = out.split()[0] if out.strip() else ""
    if not sha:
        return None
    try:
        git(repo, "cat-file", "-e", sha)
    except RemoteError:  # another host wrote it: fetch that one small object
        git(repo, "fetch", "-q", "--no-tags", "--no-write-fetch-head", "--", url, f"+{REF}:{REF}")
    fields: dict[str, str] = {}
    for line in git(repo, "cat-file", "commit", sha).partition("\n\n")[2].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    try:
        expires = float(fields.get("expires-epoch", "0"))
    except ValueError:
        expires = 0.0
    return Lease(holder=fields.get("holder", ""), expires=expires, sha=sha, url=url)


def swap(repo: Path, url: str, expected: str, holder: str, seconds: float) -> Lease:
    """Point the remote's lease at a new one for `holder`, only if it still is `expected` (a
    sha; "" for no lease at all). Raises LeaseRefused when it moved meanwhile."""
    expires = time.time() + seconds
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
    text = f"anima lease\n\nholder: {holder}\nexpires: {stamp}\nexpires-epoch: {expires:.3f}\n"
    who = {"GIT_AUTHOR_NAME": "anima", "GIT_AUTHOR_EMAIL": f"lease@{gitstore.BOT_EMAIL_DOMAIN}"}
    who |= {"GIT_COMMITTER_NAME": "anima", "GIT_COMMITTER_EMAIL": who["GIT_AUTHOR_EMAIL"]}
    git(repo, "hash-object", "-w", "-t", "tree", "--stdin", input=b"")
    sha = gitstore._git(repo, "commit-tree", "--no-gpg-sign", EMPTY_TREE, "-F", "-", input=text, env=who).strip()
    try:
        git(repo, "push", "-q", "--no-verify", f"--force-with-lease={REF}:{expected}", "--", url, f"{sha}:{REF}")
    except RemoteError as exc:
        if "stale info" in str(exc) or "rejected" in str(exc):
            raise LeaseRefused(f"{repo.name}: the lease on {url} changed meanwhile") from None
        raise
    with contextlib.suppress(RemoteError):  # keep the object reachable here (gc)
        git(repo, "update-ref", REF, sha)
    return Lease(holder=holder, expires=expires, sha=sha, url=url, checked=time.time())


def acquire(repo: Path, url: str, host: str, seconds: float) -> Lease:
    """Take or renew the lease for `host` when the remote has none, has ours, or has an expired
    one; else return the other holder's. One compare-and-swap: racing hosts cannot both win."""
    for _ in range(2):
        current = read_remote(repo, url)
        now = time.time()
        if current is not None and current.holder != host and current.expires > now:
            return replace(current, checked=now)
        try:
            return swap(repo, url, current.sha if current else "", host, seconds)
        except LeaseRefused:
            continue  # someone moved it between our read and our push: read again
    current = read_remote(repo, url)
    return replace(current or Lease(url=url), checked=time.time())


def hand_over(repo: Path, url: str, host: str, to_host: str, seconds: float) -> Lease:
    """Give the lease to `to_host` (a move): only from this host's own lease or an expired one;
    done already when `to_host` holds it."""
    current = read_remote(repo, url)
    now = time.time()
    if current is not None and current.holder == to_host:
        return current
    if current is not None and current.holder != host and current.expires > now:
        raise LeaseRefused(
            f"{repo.name}: {current.holder} holds the lease on {url}, not this host ({host}):"
            " only the holder can move the agent"
        )
    return swap(repo, url, current.sha if current else "", to_host, seconds)


def local_turns(home: Home, name: str, lease: Lease | None, host: str, lease_seconds: float) -> bool:
    """The fast part of the check before a turn: True when the lease this host holds is
    valid with a margin to spare (no network)."""
    if lease is None or lease.state != "held":
        return False
    # A record claiming more than one lease period (a clock stepped back, a hand edit) is not
    # believed: the remote is asked, as for one about to end.
    left = lease.expires - time.time()
    return lease.holder == host and lease_seconds * MARGIN < left <= lease_seconds * 1.01


def summary(lease: Lease | None) -> dict[str, Any] | None:
    """For `anima status` and `anima remote list`."""
    if lease is None:
        return None
    return {"state": lease.state, "holder": lease.holder, "expires": lease.expires,
            "to": lease.to_host, "says": lease.describe()}
