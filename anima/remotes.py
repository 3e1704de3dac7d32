"""Git remotes: each agent repository pushed to a remote (after each turn, in the background),
brought to another home (`anima clone`), and moved between homes (`anima move`) under the
lease (anima/lease.py) that lets one host at a time run it (DESIGN §7a).

An agent's remote is, in order: a `[remotes.NAME]` table listing it in `agents`, one for every
agent (its URL holds `{agent}`), or the `anima` remote of its own repository (what `anima clone`
and a move set up). Agents without a remote have no lease: no check, no cost.

Pushes never block a turn: the runtime's service `serve` pushes what is new, retries with
backoff, renews the leases this host holds, and hands on messages that land here for an agent
that was moved away. State is in `run/pushes/NAME.json` and `run/leases/NAME.json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from anima import gitstore, lease, mailbox, peer, router
from anima.config import RemoteConfig
from anima.errors import AgentExists, AnimaError, BadConfig
from anima.fsutil import write_atomic
from anima.home import Home, validate_name
from anima.lease import (
    Lease,
    LeaseRefused,
    PushState,
    RemoteError,
    check_url,
    git,
    push_state,
    save_push,
)
from anima.message import parse
from anima.peer_ops import Refused, peer_op, required

log = logging.getLogger(__name__)

POLL = 0.5
"""How often the pusher looks for new commits (reads each agent's HEAD ref file: no git)."""
MAX_BACKOFF = 300.0
MAX_RETRY = 30.0
"""The longest the pusher waits before tending a failing agent again (its lease renewals too)."""
MOVE_GRACE = 0.5
"""A move marks the agent moving, then waits this long before taking its lock, so a pass that
passed the lease check just before reaches the lock (and its turn finishes) first."""
KILL_AT_ENV = "ANIMA_TEST_MOVE_KILL_AT"
"""Tests: a move kills itself (SIGKILL) at the step this names, to prove a half-done move."""
ANIMA_REMOTE = "anima"


@dataclass(frozen=True)
class AgentRemote:
    """Where one agent is pushed: the remote's name ("" for its repository's own), the URL."""

    remote: str
    url: str
    interval: float = 0.0
    lease_seconds: float = 300.0


def _own_remote(agent_dir: Path) -> str:
    """`remote.anima.url` of the agent's repository (read from .git/config, no git)."""
    try:
        text = (agent_dir / ".git" / "config").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    m = re.search(r'(?m)^\[remote "anima"\]\s*\n((?:[ \t]+.*\n?)*)', text)
    if not m:
        return ""
    url = re.search(r"(?m)^\s*url\s*=\s*(.*?)\s*$", m.group(1))
    return url.group(1).strip('"') if url else ""


def agent_remote(home: Home, name: str, remotes: dict[str, RemoteConfig] | None = None) -> AgentRemote | None:
    """The one remote `name` is pushed to, or None."""
    remotes = home.config().remotes if remotes is None else remotes
    named = [(r, c) for r, c in sorted(remotes.items()) if name in c.agents]
    shared = [(r, c) for r, c in sorted(remotes.items()) if not c.agents]
    for rname, cfg in named + shared:
        local = _local_path(cfg.url)
        if local is not None and not local.is_absolute():
            raise BadConfig(
                f"[remotes.{rname}] url {cfg.url!r} is a relative path: give it from / "
                "(git runs in each agent's folder)"
            )
        return AgentRemote(rname, cfg.url.replace("{agent}", name), cfg.interval, cfg.lease_seconds)
    own = _own_remote(home.agents_dir / name)
    return AgentRemote("", own) if own else None


def add_remote(home: Home, name: str, url: str, agent: str | None = None) -> RemoteConfig:
    """Append `[remotes.NAME]` to anima.toml (checked, and put back if the result does not load)."""
    home.require()
    if not peer.PEER_NAME.match(name):
        raise BadConfig(f"remote name {name!r}: use letters, digits, '.', '_' or '-'")
    if name in home.config().remotes:
        raise BadConfig(f"remote {name!r} exists already in {home.config_path}")
    check_url(url.replace("{agent}", "x"))
    local = _local_path(url)
    if local is not None and not local.is_absolute():  # git runs in the agent's folder
        url = str(local.absolute())
    if agent is not None:
        home.agent_dir(agent)
    elif "{agent}" not in url:
        raise BadConfig(
            f"{url!r} is one repository: give --agent NAME, or a URL with {{agent}} for every agent"
            " (e.g. /srv/anima/{agent}.git)"
        )
    before = home.config_path.read_text(encoding="utf-8")
    table = f"\n[remotes.{name}]\nurl = {json.dumps(url)}\n"
    if agent is not None:
        table += f"agents = [{json.dumps(agent)}]\n"
    write_atomic(home.config_path, before.rstrip("\n") + "\n" + table)
    try:
        return home.config().remotes[name]
    except Exception:
        write_atomic(home.config_path, before)
        raise


def _local_path(url: str) -> Path | None:
    """The directory a local URL names (a path or file://), else None (ssh, https, host:path)."""
    if url.startswith("file://"):
        return Path(unquote(urlsplit(url).path))
    if "://" in url or re.match(r"^[^/]+:", url):
        return None
    return Path(url).expanduser()


def _ensure_bare(url: str) -> None:
    """A local remote that does not exist yet is made (a bare repository); never over ssh."""
    local = _local_path(url)
    if local is not None and not local.exists():
        local.mkdir(parents=True)
        git(local, "init", "-q", "--bare", "-b", "main", "--template=")


def _branch(agent_dir: Path) -> str:
    ref = (agent_dir / ".git" / "HEAD").read_text().strip()
    if not ref.startswith("ref: refs/heads/"):
        raise RemoteError(f"{agent_dir.name}: HEAD is not on a branch; check out main first")
    return ref.removeprefix("ref: refs/heads/")


# -- pushing ------------------------------------------------------------------------------------
def push(home: Home, name: str, target: AgentRemote) -> str:
    """Push the agent's branch to its remote now (a bare repository is made first for a local
    path that does not exist yet; never over ssh). Only the lease holder pushes. Returns the sha."""
    agent_dir = home.agents_dir / name
    check_url(target.url)
    if not holds(home, name, target):
        raise LeaseRefused(f"not pushed: this host does not hold the lease ({describe_lease(home, name)})")
    _ensure_bare(target.url)
    branch = _branch(agent_dir)
    sha = gitstore.head(agent_dir)
    try:
        git(agent_dir, "push", "-q", "--no-verify", "--", target.url, f"{sha}:refs/heads/{branch}")
    except RemoteError as exc:
        st = push_state(home, name)
        delay = min(MAX_BACKOFF, 2.0 ** min(st.attempts, 16))
        save_push(home, name, replace(st, url=target.url, error=str(exc), attempts=st.attempts + 1,
                                       next_try=time.time() + delay, at=time.time()))
        raise
    save_push(home, name, PushState(url=target.url, pushed=sha, at=time.time()))
    return sha


def behind(home: Home, name: str, target: AgentRemote) -> bool:
    """Has the agent commits its remote has not got (as far as this host pushed)?"""
    st = push_state(home, name)
    try:
        return st.url != target.url or st.pushed != gitstore.head(home.agents_dir / name)
    except gitstore.GitFailed:
        return False


# -- the lease, for this home ------------------------------------------------------------------
def _lock(home: Home, name: str) -> Path:
    return home.run_dir / "locks" / f"{name}.lock"


def describe_lease(home: Home, name: str) -> str:
    held = lease.load(home, name)
    return held.describe() if held else "no lease yet"


def refresh(home: Home, name: str, target: AgentRemote) -> Lease:
    """Ask the remote: take or renew the lease if it is free, ours, or expired; else learn who
    holds it. A move in progress or done is never undone here (but a move whose process died
    before handing the lease over is: the lease still names this host)."""
    me = peer.this_host(home)
    known = lease.load(home, name)
    if known is not None and known.state == "moving" and lease.pid_alive(known.pid):
        return known
    agent_dir = home.agents_dir / name
    if known is not None and known.state in ("moving", "moved"):
        current = lease.read_remote(agent_dir, target.url)
        if current is not None and current.holder == me and known.state == "moving":
            log.warning("%s: a move to %s stopped before the hand-over: running here again",
                        name, known.to_host)
        elif current is not None and current.holder != me:
            return lease.save(home, name, replace(known, state="moved", holder=current.holder,
                                                  expires=current.expires, checked=time.time()))
        elif known.state == "moved":
            return replace(known, checked=time.time())  # moved away: only a move brings it back
    _ensure_bare(target.url)
    got = lease.acquire(agent_dir, target.url, me, target.lease_seconds)
    return lease.save(home, name, replace(got, url=target.url))


def holds(home: Home, name: str, target: AgentRemote) -> bool:
    """Does this host hold `name`'s lease now? Asks the remote only when the local record is
    missing, near its end, or names another host (then at most every lease.RECHECK seconds)."""
    me = peer.this_host(home)
    known = lease.load(home, name)
    if known is not None and known.url == target.url:
        if lease.local_turns(home, name, known, me, target.lease_seconds):
            return True
        if known.state == "moved" or (known.state == "moving" and lease.pid_alive(known.pid)):
            return False
        if known.holder != me and time.time() - known.checked < lease.RECHECK:
            return False
    try:
        got = refresh(home, name, target)
    except (RemoteError, LeaseRefused) as exc:
        log.warning("%s: cannot reach its remote to check the lease: %s", name, exc)
        return known is not None and known.url == target.url and known.valid_for(me, time.time())
    return got.valid_for(me, time.time())


def may_run(home: Home, name: str) -> bool:
    """The check before an agent's turns (runtime.run_pass): True when the agent has no remote
    or this host holds its lease. When False the messages stay pending and a line says why."""
    try:
        target = agent_remote(home, name)
    except AnimaError as exc:
        log.warning("%s: not running turns: %s", name, exc)
        return False
    if target is None or holds(home, name, target):
        return True
    log.warning("%s: not running turns here (%s): messages stay pending", name,
                describe_lease(home, name))
    return False


def _poke(home: Home, name: str) -> None:
    """Wake the runtime for messages that waited while the lease was elsewhere."""
    for path in sorted((home.agents_dir / name / "inbox").glob("*.md"))[:1]:
        with contextlib.suppress(OSError):
            os.utime(path)


# -- the runtime's service ---------------------------------------------------------------------
def _tend(home: Home, name: str, target: AgentRemote) -> None:
    """One look at one agent: renew its lease at half time, push what is new, hand on messages
    for an agent moved away."""
    me = peer.this_host(home)
    known = lease.load(home, name)
    now = time.time()
    if known is not None and known.state == "moved":
        forward_pending(home, name, known)
        return
    if known is not None and known.state == "held" and known.holder == me and known.url == target.url:
        if known.expires - now < target.lease_seconds / 2:
            before = known.valid_for(me, now)
            got = refresh(home, name, target)
            if got.valid_for(me, time.time()) and not before:
                _poke(home, name)
    elif known is not None and known.state == "moving" and not lease.pid_alive(known.pid):
        if refresh(home, name, target).valid_for(me, time.time()):
            _poke(home, name)
    st = push_state(home, name)
    if not behind(home, name, target) or now < st.next_try:
        return
    if target.interval and now - st.at < target.interval and not st.error:
        return
    was_held = known is not None and known.valid_for(me, now)
    sha = push(home, name, target)
    if st.error:
        log.info("%s: pushed %s to %s (after %d failed tries)", name, sha[:8], target.url, st.attempts)
    if not was_held:
        _poke(home, name)


def tend_once(home: Home, names: Iterable[str]) -> None:
    """`anima run --once` (cron): push the agents it ran, renew their leases, hand on what
    waits for moved ones, as the runtime's pusher would; a failure is logged, and retried by the
    next run once its backoff has passed."""
    try:
        configured = home.config().remotes
    except AnimaError as exc:
        log.warning("remotes: cannot read the configuration: %s", exc)
        return
    for name in names:
        try:
            target = agent_remote(home, name, configured)
            if target is not None:
                _tend(home, name, target)
        except AnimaError as exc:
            log.warning("%s: remote: %s (retried next time)", name, exc)
        except Exception:  # never fails the pass: its turns are committed already
            log.exception("%s: remote: unexpected failure", name)


async def serve(home: Home, stop: asyncio.Event) -> None:
    """The pusher (runtime.SERVICES): every POLL seconds, each agent with a remote is tended in
    a worker thread; one agent's failure is logged once and retried with backoff. Which agents
    have a remote is worked out again when anima.toml or the list of agents changes, and every
    RESCAN seconds (an agent's own remote set by clone or move), not on every poll: at 1,000
    agents that look cost 17 ms, 3.5 % of a core every half second."""
    failing: dict[str, tuple[str, int, float]] = {}  # agent: (error, failures, retry at)
    targets: dict[str, AgentRemote] = {}
    seen: tuple[Any, ...] = ()
    rescan_at = 0.0
    while not stop.is_set():
        now = time.time()
        stamp = _config_stamp(home)
        if stamp != seen or now >= rescan_at:
            targets = _targets(home, failing)
            seen, rescan_at = stamp, now + RESCAN
        for name, target in targets.items():
            if stop.is_set():
                break
            if name in failing and time.time() < failing[name][2]:
                continue
            try:
                await asyncio.to_thread(_tend, home, name, target)
                failing.pop(name, None)
            except AnimaError as exc:
                _failed(failing, name, exc)
            except Exception:
                log.exception("%s: remote: unexpected failure", name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL)


RESCAN = 30.0
"""Seconds between full looks at which agents have a remote (besides every config change)."""


def _config_stamp(home: Home) -> tuple[Any, ...]:
    """What, when it changes, may change which agents have a remote: anima.toml and agents/."""
    stamps: list[tuple[int, int, int] | None] = []
    for path in (home.config_path, home.agents_dir):
        try:
            st = path.stat()
            stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


def _targets(home: Home, failing: dict[str, tuple[str, int, float]]) -> dict[str, AgentRemote]:
    """Each agent that has a remote, and where it goes."""
    try:
        remotes = home.config().remotes
        names = home.agent_names()
    except Exception as exc:  # anima.toml mid-edit
        log.warning("remotes: cannot read the configuration: %s", exc)
        return {}
    found = {}
    for name in names:
        try:
            target = agent_remote(home, name, remotes)
        except AnimaError as exc:
            _failed(failing, name, exc)
            continue
        if target is not None:
            found[name] = target
    return found


def _failed(failing: dict[str, tuple[str, int, float]], name: str, exc: Exception) -> None:
    """Log an agent's remote failure once (until it changes) and back off."""
    why, n, _ = failing.get(name, ("", 0, 0.0))
    if why != str(exc):
        log.warning("%s: remote: %s (retried)", name, exc)
    failing[name] = (str(exc), n + 1, time.time() + min(MAX_RETRY, 2.0 ** min(n, 16)))


# -- anima sync, anima remote list ---------------------------------------------------------------
@dataclass(frozen=True)
class Synced:
    agent: str
    remote: str
    url: str
    pushed: str = ""
    error: str = ""
    note: str = ""


def sync(home: Home, remote: str | None = None, agent: str | None = None) -> list[Synced]:
    """Push (and fetch) now, for every agent with a remote, or those of `remote`, or `agent`."""
    home.require()
    remotes = home.config().remotes
    if remote is not None and remote not in remotes:
        raise BadConfig(f"no remote {remote!r} in {home.config_path} (remotes: {', '.join(remotes) or 'none'})")
    names = [home.agent_dir(agent).name] if agent else home.agent_names()
    out = []
    for name in names:
        target = agent_remote(home, name, remotes)
        if target is None or (remote is not None and target.remote != remote):
            continue
        known = lease.load(home, name)
        if known is not None and known.state == "moved":
            try:
                n = forward_pending(home, name, known)
                note = f"moved to {known.to_host}" + (f"; {n} message(s) handed on" if n else "")
                out.append(Synced(name, target.remote, target.url, note=note))
            except AnimaError as exc:
                out.append(Synced(name, target.remote, target.url, error=str(exc)))
            continue
        try:
            sha = push(home, name, target)
            with contextlib.suppress(RemoteError):
                git(home.agents_dir / name, "fetch", "-q", "--no-tags", "--", target.url,
                    f"+refs/heads/*:refs/remotes/{target.remote or ANIMA_REMOTE}/*")
            out.append(Synced(name, target.remote, target.url, pushed=sha))
        except AnimaError as exc:
            out.append(Synced(name, target.remote, target.url, error=str(exc)))
    return out


def overview(home: Home) -> list[dict[str, Any]]:
    """Each agent with a remote: where it goes, what is behind, the lease (remote list, status)."""
    remotes = home.config().remotes
    rows = []
    for name in home.agent_names():
        target = agent_remote(home, name, remotes)
        if target is None:
            continue
        st = push_state(home, name)
        rows.append({
            "agent": name, "remote": target.remote or f"({ANIMA_REMOTE} in its repository)",
            "url": target.url, "behind": behind(home, name, target), "pushed": st.pushed,
            "error": st.error, "lease": describe_lease(home, name),
        })
    return rows


# -- anima clone ------------------------------------------------------------------------------
def _name_from(url: str) -> str:
    base = url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return base.removesuffix(".git")


def _refuse_links(repo: Path, rev: str, url: str) -> None:
    """An agent brought from a remote carries no symbolic links: one could turn its inbox into
    another agent's or its memory into any file of this machine. (Anima never makes one.)"""
    listing = git(repo, "ls-tree", "-r", "-z", "--full-tree", rev)
    links = [e.partition("\t")[2] for e in listing.split("\0") if e.startswith("120000 ")]
    if links:
        shown = ", ".join(links[:3]) + (" …" if len(links) > 3 else "")
        raise RemoteError(f"{url}: refused: the agent's tree holds symbolic links ({shown})")


def _fetch_into(staging: Path, url: str, name: str) -> None:
    """Make `staging` an agent repository of `url`'s branch, set up as `gitstore.init_repo`
    sets one up (identity, no auto gc, tuned index), its `anima` remote `url`."""
    staging.mkdir(parents=True)
    remote = {
        f"remote.{ANIMA_REMOTE}.url": url,
        f"remote.{ANIMA_REMOTE}.fetch": f"+refs/heads/*:refs/remotes/{ANIMA_REMOTE}/*",
    }
    gitstore.init_empty(staging, name, **remote)
    git(staging, "-c", "transfer.fsckObjects=true", "fetch", "-q", "--no-tags", "--", url,
        f"+refs/heads/*:refs/remotes/{ANIMA_REMOTE}/*")
    branches = git(staging, "for-each-ref", "--format=%(refname:lstrip=3)", f"refs/remotes/{ANIMA_REMOTE}/")
    found = branches.split()
    if not found:
        raise RemoteError(f"{url}: no branch to clone (has this agent been pushed yet?)")
    branch = "main" if "main" in found else found[0]
    _refuse_links(staging, f"refs/remotes/{ANIMA_REMOTE}/{branch}", url)
    git(staging, "checkout", "-q", "-B", branch, f"refs/remotes/{ANIMA_REMOTE}/{branch}")
    gitstore.tune(staging)
    if not (staging / "agent.toml").is_file():
        raise RemoteError(f"{url}: not an agent repository (no agent.toml)")
    for sub in ("inbox", "outbox", "archive", "history", "workspace"):
        (staging / sub).mkdir(exist_ok=True)
    problems = gitstore.health(staging)
    if problems:
        raise RemoteError(f"{url}: the clone is not healthy: {'; '.join(problems)}")


def clone(home: Home, url: str, name: str | None = None) -> str:
    """Bring an agent another home pushed into agents/NAME (whole or not at all). The lease is
    not taken here: the first turn takes it if the other host does not hold it."""
    home.require()
    check_url(url)
    local = _local_path(url)
    if local is not None:
        url = str(local.resolve())
    name = validate_name(name or _name_from(url))
    target = home.agents_dir / name
    if target.exists():
        raise AgentExists(f"agent {name!r} already exists at {target}")
    staging = home.agents_dir / f".clone-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _fetch_into(staging, url, name)
        save_push(home, name, PushState(url=url, pushed=gitstore.head(staging), at=time.time()))
        # What its outbox holds was routed by the home it came from: never again from here.
        router.mark_routed(home, name, gitstore.head(staging))
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return name


# -- anima move ---------------------------------------------------------------------------------
def _step(name: str) -> None:
    if os.environ.get(KILL_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class Moved:
    agent: str
    to_peer: str
    to_host: str
    head: str
    forwarded: int


def move(home: Home, name: str, to_peer: str) -> Moved:
    """Hand `name` over to the home of peer `to_peer`: stop its turns here, commit hand edits,
    push, give the lease to that host (compare-and-swap), ask it to adopt the agent. Each step
    is safe to be killed after; running the move again finishes it."""
    agent_dir = home.agent_dir(name)
    target = agent_remote(home, name)
    if target is None:
        raise RemoteError(f"{name} has no remote to move through: anima remote add … --agent {name}")
    peer.config(home, to_peer)
    me = peer.this_host(home)
    # Asked before anything stops here: the other home must be willing to take the agent.
    to_host = str(peer.call(home, to_peer, "adopt", agent=name, url=target.url, check=True)["host"])
    if to_host == me:
        raise BadConfig(f"peer {to_peer} is this home ({me}): nothing to move")
    known = lease.load(home, name) or Lease(url=target.url)
    if known.state == "moving" and known.pid != os.getpid() and lease.pid_alive(known.pid):
        raise LeaseRefused(f"{name} is being moved to {known.to_host} by process {known.pid}")
    if not (known.state == "moved" and known.to_host == to_host):
        lease.save(home, name, replace(known, state="moving", to_host=to_host, to_peer=to_peer,
                                       pid=os.getpid(), url=target.url))
        _step("marked")
        time.sleep(MOVE_GRACE)
        with gitstore.agent_lock(_lock(home, name)):
            _step("locked")
            try:
                current = lease.read_remote(agent_dir, target.url)
                if current is None or current.holder != to_host:
                    gitstore.commit_external(agent_dir)
                    _push_final(home, name, target, me)
                    _step("pushed")
                    lease.hand_over(agent_dir, target.url, me, to_host, target.lease_seconds)
            except BaseException:  # the remote decides, at the next look, who runs it
                lease.save(home, name, replace(known, state="moving", pid=0, url=target.url,
                                               to_host=to_host, to_peer=to_peer))
                raise
            _step("handed")
            lease.save(home, name, Lease(url=target.url, state="moved", to_host=to_host,
                                         to_peer=to_peer, holder=to_host, checked=time.time()))
    _step("moved")
    answer = peer.call(home, to_peer, "adopt", agent=name, url=target.url, timeout=300)
    _step("adopted")
    forwarded = forward_pending(home, name, lease.load(home, name) or known)
    return Moved(name, to_peer, to_host, str(answer.get("head", "")), forwarded)


def _push_final(home: Home, name: str, target: AgentRemote, me: str) -> None:
    """The last push before a hand-over, as the lease holder (the move's own marker stops turns
    but this host still holds the lease)."""
    agent_dir = home.agents_dir / name
    current = lease.read_remote(agent_dir, target.url)
    if current is not None and current.holder != me and current.expires > time.time():
        raise LeaseRefused(f"{name}: {current.holder} holds its lease: only the holder can move it")
    _ensure_bare(target.url)
    sha = gitstore.head(agent_dir)
    git(agent_dir, "push", "-q", "--no-verify", "--", target.url, f"{sha}:refs/heads/{_branch(agent_dir)}")
    save_push(home, name, PushState(url=target.url, pushed=sha, at=time.time()))


def forward_pending(home: Home, name: str, known: Lease) -> int:
    """Hand on to the agent's new home the messages that landed here after it moved (each is
    removed here once the other home has it; delivery there is idempotent by id)."""
    if known.state != "moved" or not known.to_peer:
        return 0
    inbox = home.agents_dir / name / "inbox"
    sent = 0
    for path in sorted(inbox.glob("*.md")):
        if path.name.startswith("."):
            continue
        try:
            raw = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            continue  # gone meanwhile
        except (OSError, UnicodeDecodeError) as exc:
            mailbox.reject(path, f"not handed on to {known.to_host}: not readable text ({exc})")
            continue
        try:
            peer.call(home, known.to_peer, "forward", agent=name, id=path.stem, message=raw)
        except peer.PeerError as exc:
            if not exc.permanent:
                raise
            mailbox.reject(path, f"not handed on to {known.to_host}: {exc}")
            continue
        path.unlink(missing_ok=True)
        log.info("%s: message %s handed on to %s (the agent moved there)", name, path.stem, known.to_host)
        sent += 1
    return sent


# -- what a peer may ask ------------------------------------------------------------------------
def _adopted_from(home: Home, name: str) -> Path:
    """Which peer moved agent `name` here (only that peer may hand on its late messages)."""
    return home.run_dir / "adopted" / name


def _check_continues(home: Home, name: str, url: str) -> str:
    """An agent of this name is here already: it must be the same agent, pushed to `url`, and
    the remote's branch must continue its history (a move back). Fetches; returns the branch.
    Refused otherwise: a different agent of the same name is never overwritten or taken over."""
    mine = agent_remote(home, name)
    if mine is None or mine.url != url:
        where = f"pushed to {mine.url}" if mine else "not pushed anywhere"
        raise Refused(f"{name} here is another agent ({where}), not the one at {url}")
    agent_dir = home.agents_dir / name
    try:
        git(agent_dir, "-c", "transfer.fsckObjects=true", "fetch", "-q", "--no-tags", "--", url,
            f"+refs/heads/*:refs/remotes/{ANIMA_REMOTE}/*")
        branch = _branch(agent_dir)
        theirs = f"refs/remotes/{ANIMA_REMOTE}/{branch}"
        _refuse_links(agent_dir, theirs, url)
        git(agent_dir, "merge-base", "--is-ancestor", "HEAD", theirs)
    except RemoteError as exc:
        raise Refused(f"{name} here does not continue into {url}'s history: {exc}") from None
    return branch


@peer_op("adopt")
def adopt(home: Home, host: str, request: dict[str, Any]) -> dict[str, Any]:
    """Take over an agent whose lease names this host: clone it from its remote (or bring the
    copy here up to date), record the lease, and let the runtime pick it up. Only from a peer
    allowed to (`[peers.NAME] accept_agents = true`): an agent runs with this home's keys."""
    known = home.config().peers.get(host)
    if known is None or not known.accept_agents:
        raise Refused(
            f"this home does not take agents from {host!r}: set accept_agents = true in its "
            f"[peers.{host}] table"
        )
    name = validate_name(required(request, "agent"))
    url = check_url(required(request, "url"))
    me = peer.this_host(home)
    agent_dir = home.agents_dir / name
    if request.get("check"):  # `anima move` asks first, before it stops the agent where it is
        if agent_dir.exists():
            _check_continues(home, name, url)
        return {"host": me, "agent": name}
    staging = home.agents_dir / f".adopt-{name}"
    try:
        with gitstore.agent_lock(_lock(home, name), timeout=60):  # one adopt at a time
            fresh = not agent_dir.exists()
            if fresh:
                shutil.rmtree(staging, ignore_errors=True)
                _fetch_into(staging, url, name)
            repo = staging if fresh else agent_dir
            current = lease.read_remote(repo, url)
            if current is None or current.holder != me:
                holder = current.holder if current else "nobody"
                raise Refused(f"the lease of {name} on {url} names {holder}, not {me}")
            if not fresh:
                branch = _check_continues(home, name, url)
                git(agent_dir, "merge", "-q", "--ff-only", f"refs/remotes/{ANIMA_REMOTE}/{branch}")
            lease.save(home, name, replace(current, url=url, state="held", checked=time.time()))
            save_push(home, name, PushState(url=url, pushed=gitstore.head(repo), at=time.time()))
            write_atomic(_adopted_from(home, name), host + "\n")
            # Its outbox so far was routed by the home it came from: never again from here.
            router.mark_routed(home, name, gitstore.head(repo))
            if fresh:
                staging.rename(agent_dir)
            else:
                _poke(home, name)
    except RemoteError as exc:
        raise AnimaError(f"cannot adopt {name}: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("%s: adopted from %s (moved here by %s)", name, url, host)
    return {"agent": name, "head": gitstore.head(agent_dir)}


@peer_op("forward")
def forward(home: Home, host: str, request: dict[str, Any]) -> dict[str, Any]:
    """A message that reached the agent's old home after it moved here: into its inbox, once,
    from the peer that moved it here only, and only messages (a heartbeat or reminder belongs
    to the host that runs the agent now). It is marked `forwarded_by`."""
    name = validate_name(required(request, "agent"))
    if name not in home.agent_names():
        raise AnimaError(f"no agent {name!r} here yet (its move is not finished)")
    try:
        mover = _adopted_from(home, name).read_text().strip()
    except FileNotFoundError:
        mover = ""
    if mover != host:
        raise Refused(f"{name} was not moved here by {host!r}: it cannot hand on its messages")
    msg_id = required(request, "id")
    raw = required(request, "message").encode("utf-8", "surrogatepass")
    try:
        msg = parse(raw, fallback_id=msg_id, default_to=name)
    except AnimaError as exc:
        raise Refused(f"not a message: {exc}") from None
    if msg.kind != "message":
        return {"id": msg.id, "delivered": False, "skipped": f"a {msg.kind} is not handed on"}
    extra = {k: v for k, v in msg.extra.items() if k != "reminder_id"} | {"forwarded_by": host}
    delivered = mailbox.deliver(home.agents_dir / name, msg.with_(to=name, extra=extra))
    return {"id": msg.id, "delivered": delivered is not None}
