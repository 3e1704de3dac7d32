"""Self-modification: an agent proposes changes to itself on a branch; a person decides.

A proposal edits only persona.md, always.md, skills/** and whitelisted agent.toml keys. It is one
commit on `refs/heads/proposals/<id>`, built with plumbing (hash-object, a private index,
commit-tree, update-ref): no worktree, and the checked-out main is never touched. Before anyone
sees it, it is checked (config loads, skills valid, persona within budget, the last recorded
turns' contexts assemble with the proposed files); the result is part of its commit message.

Approving applies its changes onto main as one commit (reason and approver in the body), after
checking again; rejecting moves the branch to `refs/anima/proposals-rejected/<id>` under a commit
saying who rejected it. After an approval, failing turns revert the change (`after_pass`); the
owner may decide from a channel with a message "approve ID" / "reject ID" (`answer`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from anima import gitstore, proposal_checks
from anima.agent import Agent
from anima.errors import AnimaError, BadConfig, BadProposal
from anima.fsutil import write_atomic
from anima.message import Message

if TYPE_CHECKING:
    from anima.mailbox import Pending
    from anima.turn import AgentRun, TurnResult

log = logging.getLogger(__name__)

OPEN = "refs/heads/proposals/"
APPROVED = "refs/anima/proposals-approved/"
REJECTED = "refs/anima/proposals-rejected/"
REVERTED = "refs/anima/proposals-reverted/"
STATES = {OPEN: "open", APPROVED: "approved", REJECTED: "rejected", REVERTED: "reverted"}
State = Literal["open", "approved", "rejected", "reverted"]
Entry = tuple[str, str] | None
"""A file in a tree as (mode, blob), or None where the tree has none."""

FILES = {"persona.md": "persona", "always.md": "always", "agent.toml": "config"}
"""Whole files a proposal may change (agent.toml only through whitelisted keys), by category."""
SKILLS = "skills/"
CONFIG_KEYS = frozenset({"model", "provider", "fallback", "reflection.at"})
CONFIG_TABLES = frozenset({"heartbeat", "budget", "autonomy"})
"""agent.toml keys a proposal may set: these, and any key of these tables. Never tools, shell,
http, owner, trusted_channels, mcp, proposals or channels."""
MAX_FILES = 50
MAX_FILE_BYTES = 128 * 1024
MAX_TOTAL_BYTES = 512 * 1024
REASON_CHARS = 2000
_ID = re.compile(r"[0-9a-f]{6}")
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_DECISION = re.compile(r"\s*(approve|reject)\s+([0-9a-f]{6})\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Proposal:
    """One proposal as its ref and commit record it."""

    id: str
    state: State
    commit: str
    """The proposal's own commit (for a rejected one: the record on top of it)."""
    subject: str
    reason: str
    files: tuple[str, ...]
    problems: tuple[str, ...]
    """What its checks found; empty: passed."""
    date: str
    config: Mapping[str, Any]
    """The agent.toml keys it sets (re-applied on main's agent.toml if that changed since)."""

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def categories(self) -> set[str]:
        return {FILES.get(f, "skills") for f in self.files}


# ---- what may be proposed -------------------------------------------------------------------


def _one_line(text: str, limit: int) -> str:
    printable = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(printable.split())[:limit]


def allowed_path(rel: str) -> str:
    """`rel` if a proposal may write it (persona.md, always.md, skills/NAME/...), else raise."""
    if rel in ("persona.md", "always.md"):
        return rel
    parts = rel.split("/")
    ok = (
        rel.startswith(SKILLS)
        and len(parts) >= 3
        and all(_SEGMENT.fullmatch(p) and p.lower() != ".git" for p in parts[1:])
        and ".." not in parts
    )
    if not ok:
        raise BadProposal(
            f"cannot propose a change to {rel[:200]!r}: a proposal may change persona.md, "
            "always.md, files under skills/NAME/ (plain names: letters, digits, - _ .) and "
            "agent.toml keys through `config`"
        )
    return rel


def allowed_key(key: str) -> tuple[str, ...]:
    """The parts of a dotted agent.toml key a proposal may set, else raise."""
    parts = tuple(key.split("."))
    if key in CONFIG_KEYS or (
        len(parts) == 2 and parts[0] in CONFIG_TABLES and parts[1].isidentifier()
    ):
        return parts
    raise BadProposal(
        f"agent.toml key {key[:100]!r} may not be proposed: allowed are "
        f"{', '.join(sorted(CONFIG_KEYS))} and {', '.join(t + '.*' for t in sorted(CONFIG_TABLES))}"
        " (never tools, owner, trusted channels, mcp, proposals or channels)"
    )


def _toml_value(value: Any, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and value == value and abs(value) != float("inf"):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string
    if isinstance(value, list) and all(not isinstance(v, list | dict) for v in value):
        return "[" + ", ".join(_toml_value(v, key) for v in value) + "]"
    raise BadProposal(f"agent.toml {key}: {value!r:.100} is not a value a proposal can set")


def edit_toml(text: str, changes: Mapping[str, Any]) -> str:
    """`text` with each dotted key set (None: removed), editing lines in place so comments and
    layout survive. Raises BadProposal when the result would not be exactly that change."""
    try:
        want = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadProposal(f"agent.toml cannot be read now ({exc}); fix it by hand first") from exc
    lines = text.splitlines()
    for key, value in changes.items():
        parts = allowed_key(key)
        table, name = (parts[0], parts[1]) if len(parts) == 2 else ("", parts[0])
        scope = want.setdefault(table, {}) if table else want
        if not isinstance(scope, dict):
            raise BadProposal(f"agent.toml: {table} is not a table")
        if value is None:
            scope.pop(name, None)
        else:
            scope[name] = value
        lines = _set_line(lines, table, name, None if value is None else _toml_value(value, key))
    out = "\n".join(lines) + "\n"
    try:
        if tomllib.loads(out) != want:
            raise BadProposal("agent.toml could not be edited in place; edit it by hand")
    except tomllib.TOMLDecodeError as exc:
        raise BadProposal(f"agent.toml could not be edited in place ({exc})") from exc
    return out


def _set_line(lines: list[str], table: str, name: str, rendered: str | None) -> list[str]:
    header = re.compile(r"\s*\[")
    start = 0
    if table:
        own = re.compile(rf"\s*\[\s*{re.escape(table)}\s*\]\s*(#.*)?$")
        found = [i for i, line in enumerate(lines) if own.match(line)]
        if not found:
            return lines if rendered is None else [*lines, "", f"[{table}]", f"{name} = {rendered}"]
        start = found[0] + 1
    end = next((i for i in range(start, len(lines)) if header.match(lines[i])), len(lines))
    key = re.compile(rf"\s*{re.escape(name)}\s*=")
    for i in range(start, end):
        if key.match(lines[i]):
            return lines[:i] + ([f"{name} = {rendered}"] if rendered else []) + lines[i + 1 :]
    return lines if rendered is None else [*lines[:start], f"{name} = {rendered}", *lines[start:]]


# ---- git ------------------------------------------------------------------------------------


def _git(agent: Agent | Path, *args: str, **kw: Any) -> str:
    path = agent.path if isinstance(agent, Agent) else agent
    return gitstore._git(path, *args, **kw)


def _ref_of(path: Path, pid: str) -> tuple[str, str] | None:
    for prefix in STATES:
        try:
            return prefix, _git(path, "rev-parse", "--verify", "-q", prefix + pid).strip()
        except gitstore.GitFailed:
            continue
    return None


def _entry(path: Path, rev: str, rel: str) -> Entry:
    """(mode, blob) of `rel` in `rev`, or None when it has none."""
    out = _git(path, "ls-tree", "-z", rev, "--", rel).rstrip("\0")
    if not out:
        return None
    meta, _, _name = out.partition("\t")
    mode, _kind, sha = meta.split()
    return mode, sha


def _tree_with(path: Path, base: str, changes: Mapping[str, Entry]) -> str:
    """The tree of `base` with each path set to (mode, blob) or removed, in a private index."""
    index = Path(tempfile.mkdtemp(prefix="anima-proposal-")) / "index"
    env = {"GIT_INDEX_FILE": str(index), "GIT_CONFIG_COUNT": "1"}
    env |= {"GIT_CONFIG_KEY_0": "core.splitIndex", "GIT_CONFIG_VALUE_0": "false"}
    try:
        _git(path, "read-tree", base, env=env)
        for rel, entry in sorted(changes.items()):
            if entry is None:
                _git(path, "update-index", "--force-remove", "--", rel, env=env)
            else:
                _git(
                    path,
                    "update-index",
                    "--add",
                    "--cacheinfo",
                    f"{entry[0]},{entry[1]},{rel}",
                    env=env,
                )
        return _git(path, "write-tree", env=env).strip()
    except gitstore.GitFailed as exc:
        raise BadProposal(f"the edits do not fit the repository's files: {exc}") from exc
    finally:
        shutil.rmtree(index.parent, ignore_errors=True)


def _changes(path: Path, old: str, new: str) -> dict[str, Entry]:
    """What `new` sets each changed file to, relative to `old` (None: removed)."""
    out = _git(path, "diff-tree", "-r", "-z", "--no-renames", old, new)
    fields = out.split("\0")
    result: dict[str, Entry] = {}
    for meta, rel in zip(fields[0::2], fields[1::2], strict=False):
        if not rel:
            continue
        _, new_mode, _, new_sha, status = meta.lstrip(":").split()
        result[rel] = None if status == "D" else (new_mode, new_sha)
    return result


# ---- making a proposal ----------------------------------------------------------------------


def create(
    agent: Agent,
    reason: str,
    *,
    files: Mapping[str, str | None] | None = None,
    config: Mapping[str, Any] | None = None,
    summary: str = "",
    by: str = "",
) -> Proposal:
    """File a proposal: write the edits as a commit on `proposals/<id>` (HEAD's tree plus the
    edits; main and the working tree are untouched) and check it. `files` maps a path to its
    new text (None: delete); `config` maps a dotted agent.toml key to its value (None: unset).
    Raises BadProposal for anything outside the whitelist, changing nothing."""
    reason = _one_line(reason, REASON_CHARS)
    if not reason:
        raise BadProposal("a proposal needs a reason: say why this change makes you better")
    files, config = dict(files or {}), dict(config or {})
    if not files and not config:
        raise BadProposal("a proposal must change something: give files and/or config")
    if len(files) > MAX_FILES or len(config) > MAX_FILES:
        raise BadProposal(f"a proposal may change at most {MAX_FILES} files and keys")
    path, base = agent.path, gitstore.head(agent.path)
    changes = _file_changes(path, base, files)
    if config:
        changes["agent.toml"] = _config_change(path, base, config)
    tree = _tree_with(path, base, changes)
    problems = proposal_checks.problems(agent, tree)
    pid = _new_id(path)
    lines = [
        f"proposal({agent.name}): {_one_line(summary, 100) or 'change ' + ', '.join(sorted(changes))[:90]}"
    ]
    lines += ["", f"Reason: {reason}", "", f"Checks: {'failed' if problems else 'passed'}"]
    lines += [f"- {_one_line(p, 500)}" for p in problems]
    lines += ["", f"Anima-Proposal: {pid}", f"Anima-Files: {', '.join(sorted(changes))}"]
    lines += [f"Anima-Checks: {'failed' if problems else 'passed'}"]
    lines += [f"Anima-Proposed-By: {_one_line(by or agent.name, 100)}"]
    if config:  # one line: JSON escapes every line break a value may hold
        lines += [f"Anima-Config: {json.dumps(config, ensure_ascii=True, sort_keys=True)}"]
    sha = _git(
        path,
        "commit-tree",
        "--no-gpg-sign",
        tree,
        "-p",
        base,
        "-F",
        "-",
        input="\n".join(lines) + "\n",
    ).strip()
    _git(path, "update-ref", OPEN + pid, sha, "0" * 40)
    return get(agent, pid)


def _config_change(path: Path, rev: str, config: Mapping[str, Any]) -> tuple[str, str]:
    """agent.toml of `rev` with the `config` keys set, as (mode, blob) in the object store."""
    try:
        current = _git(path, "cat-file", "blob", f"{rev}:agent.toml")
    except gitstore.GitFailed:
        current = ""
    text = edit_toml(current, config)
    if len(text.encode("utf-8")) > MAX_FILE_BYTES:
        raise BadProposal(f"agent.toml would be larger than {MAX_FILE_BYTES} bytes")
    return "100644", _git(path, "hash-object", "-w", "--stdin", input=text).strip()


def _file_changes(path: Path, base: str, files: Mapping[str, str | None]) -> dict[str, Entry]:
    """Each proposed file as (mode, blob) written to the object store, or None to delete."""
    changes: dict[str, Entry] = {}
    total = 0
    for rel, text in files.items():
        allowed_path(rel)
        if text is None:
            if _entry(path, base, rel) is None:
                raise BadProposal(f"cannot delete {rel}: it does not exist")
            changes[rel] = None
            continue
        if not isinstance(text, str) or "\0" in text:
            raise BadProposal(f"{rel}: the content must be text")
        data = text.encode("utf-8", "strict")
        total += len(data)
        if len(data) > MAX_FILE_BYTES or total > MAX_TOTAL_BYTES:
            raise BadProposal(
                f"{rel}: too large (each file ≤ {MAX_FILE_BYTES} bytes, all ≤ {MAX_TOTAL_BYTES})"
            )
        old = _entry(path, base, rel)
        if old is not None and old[0] not in ("100644", "100755"):
            raise BadProposal(f"{rel} is not a regular file in the repository; it stays as is")
        blob = _git(path, "hash-object", "-w", "--stdin", input=data).strip()
        changes[rel] = (old[0] if old else "100644", blob)
    return changes


def _new_id(path: Path) -> str:
    while True:
        pid = secrets.token_hex(3)
        if _ref_of(path, pid) is None:
            return pid


# ---- reading proposals ----------------------------------------------------------------------


def _parse(pid: str, state: State, sha: str, message: str, date: str) -> Proposal:
    lines = message.splitlines()
    subject = lines[0] if lines else ""
    reason = next((ln[8:] for ln in lines if ln.startswith("Reason: ")), "")
    trailers = dict(ln.split(": ", 1) for ln in lines if ln.startswith("Anima-") and ": " in ln)
    problems = [ln[2:] for ln in lines if ln.startswith("- ")]
    if trailers.get("Anima-Checks") != "failed":
        problems = []
    elif not problems:
        problems = ["checks failed"]
    files = tuple(f.strip() for f in trailers.get("Anima-Files", "").split(",") if f.strip())
    try:
        config = json.loads(trailers.get("Anima-Config", "{}"))
    except ValueError:
        config = {}
    config = config if isinstance(config, dict) else {}
    return Proposal(pid, state, sha, subject, reason, files, tuple(problems), date, config)


def proposals(agent: Agent) -> list[Proposal]:
    """Every proposal of `agent`, newest first."""
    fmt = "%(refname)%00%(objectname)%00%(creatordate:iso-strict)%00%(contents)%1e"
    out = _git(agent, "for-each-ref", f"--format={fmt}", *STATES)
    found = []
    for record in out.split("\x1e"):
        record = record.strip("\n")
        if not record:
            continue
        ref, sha, date, message = record.split("\0", 3)
        prefix = next(p for p in STATES if ref.startswith(p))
        pid = ref[len(prefix) :]
        if prefix == REJECTED:  # the rejection record sits on top of the proposal
            message = _git(agent, "log", "-1", "--format=%B", f"{sha}^")
        found.append(_parse(pid, STATES[prefix], sha, message, date))  # type: ignore[arg-type]
    return sorted(found, key=lambda p: p.date, reverse=True)


def get(agent: Agent, pid: str) -> Proposal:
    """The proposal `pid` (six hex digits), whatever its state."""
    for p in proposals(agent) if _ID.fullmatch(pid) else ():
        if p.id == pid:
            return p
    raise BadProposal(
        f"{agent.name} has no proposal {pid[:20]!r}: see `anima proposals list {agent.name}`"
    )


def latest(agent: Agent, pid: str | None) -> Proposal:
    """A proposal by id, or the newest open one."""
    if pid:
        return get(agent, pid)
    waiting = [p for p in proposals(agent) if p.state == "open"]
    if not waiting:
        raise BadProposal(f"{agent.name} has no open proposal")
    return waiting[0]


def diff(agent: Agent, pid: str) -> str:
    """The proposal's message, checks and diff, for a person to read."""
    p = get(agent, pid)
    rev = f"{p.commit}^" if p.state == "rejected" else p.commit
    text = _git(agent, "show", "--stat", "--patch", "--format=fuller", rev).rstrip("\n")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)  # no escapes reach a terminal


# ---- deciding -------------------------------------------------------------------------------


def _lock(agent: Agent) -> Any:
    return gitstore.agent_lock(agent.home.run_dir / "locks" / f"{agent.name}.lock", timeout=30)


def approve(agent: Agent, pid: str, *, by: str, force: bool = False) -> str:
    """Apply an open proposal onto main as one commit (reason and approver in its body), after
    checking it again on today's main. Takes the agent's lock. Returns the commit's sha."""
    from anima.turn import prepare

    with _lock(agent):
        prepare(agent)
        return approve_locked(agent, pid, by=by, force=force)


def _on_head(agent: Agent, p: Proposal, head: str) -> tuple[dict[str, Entry], dict[str, Entry]]:
    """The proposal's changes as they would apply on `head` (an agent.toml edited since gets
    the proposal's keys set again), and what each path held when it was proposed."""
    base = _git(agent, "rev-parse", f"{p.commit}^").strip()
    changes = _changes(agent.path, base, p.commit)
    expected = _entries(agent.path, base, changes)
    toml_now = _entry(agent.path, head, "agent.toml")
    if p.config and "agent.toml" in changes and toml_now != expected["agent.toml"]:
        changes["agent.toml"] = _config_change(agent.path, head, p.config)  # edited since
        expected["agent.toml"] = toml_now
    return changes, expected


def checks_now(agent: Agent, pid: str) -> list[str]:
    """What the proposal's checks say on the agent as it is now (approval runs them again:
    a change made since, anywhere in the agent, counts)."""
    p = get(agent, pid)
    head = gitstore.head(agent.path)
    changes, _ = _on_head(agent, p, head)
    return proposal_checks.problems(agent, _tree_with(agent.path, head, changes))


def approve_locked(agent: Agent, pid: str, *, by: str, force: bool = False) -> str:
    """`approve`, for a caller that holds the agent's lock and has committed hand edits."""
    p = get(agent, pid)
    if p.state != "open":
        raise BadProposal(f"proposal {pid} is {p.state}, not open")
    head = gitstore.head(agent.path)
    changes, expected = _on_head(agent, p, head)
    if not _still_to_make(agent, expected, changes):
        raise BadProposal(f"main already has what proposal {pid} proposes; reject it instead")
    problems = (
        proposal_checks.problems(agent, _tree_with(agent.path, head, changes)) if not force else []
    )
    if problems and not force:
        raise BadProposal(
            f"proposal {pid} fails its checks: {'; '.join(problems)} "
            f"(approve anyway with `anima proposals approve {agent.name} {pid} --force`)"
        )
    body = [f"Reason: {p.reason}", f"Approved by: {_one_line(by, 200)}"]
    if force:
        body.append("Approved with --force (checks not required to pass)")
    trailers = [("Anima-Proposal", pid), ("Anima-Approved-By", by)]
    sha = _apply(
        agent,
        changes,
        expected,
        f"proposal({agent.name}): apply {pid}: {p.subject.split(': ', 1)[-1]}",
        "\n".join(body),
        trailers,
    ) or gitstore.head(agent.path)
    _git(agent, "update-ref", APPROVED + pid, p.commit)
    _git(agent, "update-ref", "-d", OPEN + pid, p.commit)
    watch = _watch(agent)
    watch.parent.mkdir(parents=True, exist_ok=True)
    watch.write_text(
        json.dumps({"id": pid, "commit": sha, "failures": 0, "passed": 0, **_limits(agent)})
    )
    return sha


def _limits(agent: Agent) -> dict[str, int]:
    """The safety net's limits, from the config before the change (it may break the config)."""
    cfg = proposal_checks.settings(agent)
    return {"revert_after": cfg.revert_after_failures, "window": cfg.check_turns}


def _entries(path: Path, rev: str, paths: Iterable[str]) -> dict[str, Entry]:
    return {rel: _entry(path, rev, rel) for rel in paths}


def _apply(
    agent: Agent,
    changes: Mapping[str, Entry],
    expected: Mapping[str, Entry],
    subject: str,
    body: str,
    trailers: Sequence[tuple[str, str]],
) -> str | None:
    """Write `changes` into the working tree and commit exactly those paths on main. Each file
    must still be on main as `expected` says: a later change to it is never overwritten. None
    when main has every file as `changes` make it already (no empty commit)."""
    path = agent.path
    changes = _still_to_make(agent, expected, changes)
    if not changes:
        return None
    for rel, entry in changes.items():
        target = _safe_target(path, rel)
        if entry is None:
            target.unlink(missing_ok=True)
            continue
        data = gitstore._git_bytes(path, "cat-file", "blob", entry[1])
        write_atomic(target, data)
        os.chmod(target, 0o755 if entry[0] == "100755" else 0o644)
    return gitstore.commit(path, subject, body=body, trailers=trailers, paths=sorted(changes))


def _still_to_make(
    agent: Agent, expected: Mapping[str, Entry], changes: Mapping[str, Entry]
) -> dict[str, Entry]:
    """The changes main does not have yet. Raises unless every file is on main as `expected`
    or as `changes` make it."""
    out = {}
    for rel, entry in changes.items():
        now = _entry(agent.path, "HEAD", rel)
        if now != expected[rel] and now != entry:
            raise BadProposal(f"{rel} changed on main since the proposal; propose it again")
        if now != entry:
            out[rel] = entry
    return out


def _safe_target(root: Path, rel: str) -> Path:
    """`root/rel`, with every folder on the way a real folder inside `root` (made if missing)
    and the file itself not a symlink: a write can never land outside the repository."""
    if rel != "agent.toml":
        allowed_path(rel)  # checked when the proposal was made; this is the last line of defence
    here = root
    for part in rel.split("/")[:-1]:
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            here.mkdir()
            continue
        if not stat.S_ISDIR(mode):
            raise BadProposal(f"{here.relative_to(root)} is not a plain folder; not writing {rel}")
    target = here / rel.split("/")[-1]
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise BadProposal(f"{rel} is not a plain file in {root.name}; not writing it")
    return target


def reject(agent: Agent, pid: str, *, by: str, why: str = "") -> str:
    """Close an open proposal: its branch goes, and a record (who, why) is kept on
    refs/anima/proposals-rejected/<id> on top of it. Takes the agent's lock (an approval may be
    under way). Returns the record's sha."""
    with _lock(agent):
        return reject_locked(agent, pid, by=by, why=why)


def reject_locked(agent: Agent, pid: str, *, by: str, why: str = "") -> str:
    """`reject`, for a caller that holds the agent's lock."""
    p = get(agent, pid)
    if p.state != "open":
        raise BadProposal(f"proposal {pid} is {p.state}, not open")
    message = f"reject proposal {pid}\n\nRejected by: {_one_line(by, 200)}\n"
    if why.strip():
        message += f"Why: {_one_line(why, REASON_CHARS)}\n"
    tree = f"{p.commit}^{{tree}}"
    sha = _git(
        agent, "commit-tree", "--no-gpg-sign", tree, "-p", p.commit, "-F", "-", input=message
    ).strip()
    _git(agent, "update-ref", REJECTED + pid, sha, "0" * 40)
    _git(agent, "update-ref", "-d", OPEN + pid, p.commit)
    return sha


def revert(agent: Agent, pid: str, *, why: str) -> str:
    """Undo an applied proposal with a commit saying why. Takes the agent's lock."""
    from anima.turn import prepare

    with _lock(agent):
        prepare(agent)
        return revert_locked(agent, pid, why=why)


def revert_locked(agent: Agent, pid: str, *, why: str) -> str:
    """`revert`, for a caller that holds the agent's lock and has committed hand edits."""
    p = get(agent, pid)
    if p.state != "approved":
        raise BadProposal(f"proposal {pid} is {p.state}, not approved")
    sha = applied_commit(agent, pid)
    parent = _git(agent, "rev-parse", f"{sha}^").strip()
    back = _changes(agent.path, sha, parent)
    out = _apply(
        agent,
        back,
        _entries(agent.path, sha, back),
        f"proposal({agent.name}): revert {pid}",
        f"Why: {_one_line(why, REASON_CHARS)}",
        [("Anima-Proposal-Reverted", pid)],
    )
    _git(agent, "update-ref", REVERTED + pid, p.commit)
    _git(agent, "update-ref", "-d", APPROVED + pid, p.commit)
    _watch(agent).unlink(missing_ok=True)
    return out or gitstore.head(agent.path)  # None: already undone on main (anima undo)


def applied_commit(agent: Agent, pid: str) -> str:
    """The commit on main that applied proposal `pid`: its subject is ours and its trailer names
    the proposal (a turn's text that merely quotes the trailer is not it)."""
    subject = f"proposal({agent.name}): apply {pid}: "
    for e in gitstore.log(agent.path, limit=None, grep=f"Anima-Proposal: {pid}"):
        if e.subject.startswith(subject) and e.trailers.get("Anima-Proposal") == pid:
            return e.sha
    raise BadProposal(f"the commit that applied proposal {pid} is not on main")


# ---- the runtime's hooks --------------------------------------------------------------------


def _watch(agent: Agent) -> Path:
    """run/proposals/NAME.json: the change just applied, and how its next turns went."""
    return agent.home.run_dir / "proposals" / f"{agent.name}.json"


def after_pass(agent: Agent, run: AgentRun) -> None:
    """After a pass over the agent's inbox, under its lock: revert a just-applied change whose
    next turns failed, then apply the open proposals `auto_apply` allows. Never raises: this is
    the safety net, and a failure here is logged, not the turn's."""
    try:
        _safety_net(agent, run)
        _auto_apply(agent)
    except Exception:
        log.exception("%s: proposals after the pass failed", agent.name)


def _safety_net(agent: Agent, run: AgentRun) -> None:
    watch = _watch(agent)
    try:
        state = json.loads(watch.read_text())
    except (FileNotFoundError, ValueError):
        return
    errors = [r.error for r in run.results if r.error]
    state["failures"] += len(errors)
    state["passed"] += len(run.results) - len(errors)
    if state["revert_after"] and state["failures"] >= state["revert_after"]:
        why = (
            f"{state['failures']} failed turns after proposal {state['id']} was applied "
            f"(revert_after_failures = {state['revert_after']}); last error: {errors[-1] if errors else '?'}"
        )
        log.warning("%s: reverting proposal %s: %s", agent.name, state["id"], why)
        try:
            revert_locked(agent, state["id"], why=why)
        except AnimaError as exc:  # a person changed the files since: theirs to decide
            log.warning("%s: cannot revert proposal %s: %s", agent.name, state["id"], exc)
            watch.unlink(missing_ok=True)
    elif state["passed"] >= state["window"]:
        watch.unlink(missing_ok=True)
    else:
        watch.write_text(json.dumps(state))


def _auto_apply(agent: Agent) -> None:
    try:
        allowed = set(agent.config.proposals.auto_apply)
    except BadConfig:
        return
    if not allowed:
        return
    for p in proposals(agent):
        if p.state == "open" and p.passed and p.categories <= allowed:
            try:
                approve_locked(
                    agent, p.id, by=f"auto-apply (proposals.auto_apply = {sorted(allowed)})"
                )
            except AnimaError as exc:
                log.warning("%s: proposal %s not applied automatically: %s", agent.name, p.id, exc)


def is_owner(agent: Agent, msg: Message) -> bool:
    """May `msg` decide this agent's proposals? Only its owner: on a trusted local channel as
    `owner`, or at an owner address of a chat channel. Never an agent (itself included), never
    a timer, never a stranger."""
    if msg.kind != "message" or msg.channel in ("agent", "timer"):
        return False
    if msg.sender == agent.name or msg.sender in agent.home.agent_names():
        return False
    cfg = agent.config
    if msg.sender == cfg.owner and msg.channel in cfg.trusted_channels:
        return True
    return ":" in msg.sender and msg.sender in agent.home.config().owner_addresses


def decision(agent: Agent, msg: Message) -> Entry:
    """("approve"|"reject", id) when `msg` is the owner's decision, else None."""
    m = _DECISION.fullmatch(msg.body)
    if m is None or not is_owner(agent, msg):
        return None
    return m.group(1).lower(), m.group(2).lower()


def answer(agent: Agent, group: list[Pending]) -> TurnResult | None:
    """When every message of a batch is the owner's "approve ID" / "reject ID", decide them
    without a model call and commit a turn whose reply says what happened. Otherwise None: the
    batch is an ordinary turn (and approves nothing). Call under the agent's lock."""
    from anima import turnlog
    from anima.context import render_incoming
    from anima.message import iso, utcnow
    from anima.turn import TurnResult, _reply_for

    decisions = [decision(agent, p.message) for p in group]
    if not group or any(d is None for d in decisions):
        return None
    said = []
    for d, p in zip(decisions, group, strict=True):
        assert d is not None
        verb, pid = d
        try:
            if verb == "approve":
                sha = approve_locked(agent, pid, by=p.message.sender)
                said.append(f"Approved proposal {pid}: applied as commit {sha[:8]}.")
            else:
                reject_locked(agent, pid, by=p.message.sender)
                said.append(f"Rejected proposal {pid}; its branch is gone, the record kept.")
        except AnimaError as exc:
            said.append(f"Could not {verb} proposal {pid}: {exc}")
    batch = [p.message for p in group]
    text = "\n".join(said)
    reply = _reply_for(agent, batch, text)
    trigger, conv, now = batch[-1], batch[-1].conversation, iso(utcnow())
    records: list[dict[str, object]] = [
        {
            "role": "user",
            "content": [{"type": "text", "text": render_incoming(m, agent)} for m in batch],
        },
        {"role": "assistant", "content": [{"type": "text", "text": text}]},
    ]
    for rec in records:
        rec.update(turn=trigger.id, ts=now)
    record = turnlog.TurnRecord.of_batch(
        agent.path,
        group,
        [reply],
        subject=f"turn({agent.name}): proposal decision from {trigger.sender} (no model call)",
        body=text,
        trailers=[
            ("Anima-Trigger", f"{trigger.kind}:{trigger.channel}:{trigger.sender}"),
            ("Anima-Message", ", ".join(m.id for m in batch)),
            ("Anima-Conversation", conv),
            ("Anima-Model", "none"),
        ],
        conversation=conv,
        records=records,
        parent=gitstore.head(agent.path),
    )
    sha = turnlog.commit(agent.path, record)
    return TurnResult(agent.name, conv, [m.id for m in batch], sha, reply, [reply], model="none")
