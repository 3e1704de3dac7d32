"""What the dashboard shows, read from the files and git history (never a store of its own):
the audit timeline with filters and pages, turns and tokens per day, a conversation as chat
bubbles, memory notes confined to the agent's memory/, and the channels' dead letters."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anima import gitstore, history, mailbox
from anima.errors import AnimaError, BadMessage, BadName
from anima.home import Home
from anima.message import Message, valid_id

TURN_GREP = ["^turn(", '^Revert "turn(']
"""The same selection as `anima status`'s last turn: turns and their undos."""
PER_PAGE = 25
_SHA = re.compile(r"[0-9a-f]{7,40}")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
READ_MAX = 1 << 20


def check_sha(sha: str) -> str:
    """A commit id as the pages link it (hex, 7-40); anything else (a ref name, `HEAD~1`,
    an option) is refused before it reaches git."""
    if not _SHA.fullmatch(sha):
        raise BadName(f"not a commit id: {sha[:60]!r}")
    return sha


def check_conversation(name: str) -> str:
    if not valid_id(name):
        raise BadName(f"not a conversation name: {name[:60]!r} (letters, digits, '.', '_', '-')")
    return name


def check_day(day: str) -> str:
    if day and not _DAY.fullmatch(day):
        raise BadName(f"not a date: {day[:20]!r} (YYYY-MM-DD)")
    return day


@dataclass(frozen=True)
class Filters:
    """Timeline filters; empty means any. Dates are inclusive days (UTC as git records them)."""

    conversation: str = ""
    trigger: str = ""
    since: str = ""
    until: str = ""

    def __post_init__(self) -> None:
        if self.conversation:
            check_conversation(self.conversation)
        check_day(self.since)
        check_day(self.until)
        if len(self.trigger) > 100:
            raise BadName("trigger filter too long")

    def grep(self) -> str | list[str]:
        """The one pattern git can select by (git ORs several): the most selective filter."""
        if self.conversation:
            return f"^Anima-Conversation: {re.escape(self.conversation)}$"
        if self.trigger:
            return f"^Anima-Trigger: .*{re.escape(self.trigger)}"
        return TURN_GREP

    def matches(self, e: gitstore.LogEntry) -> bool:
        day = e.date[:10]
        return (
            e.subject.startswith(("turn(", 'Revert "turn('))
            and (not self.conversation or e.trailers.get("Anima-Conversation") == self.conversation)
            and (
                not self.trigger
                or self.trigger.lower() in e.trailers.get("Anima-Trigger", "").lower()
            )
            and (not self.since or day >= self.since)
            and (not self.until or day <= self.until)
        )

    def older_than_wanted(self, e: gitstore.LogEntry) -> bool:
        return bool(self.since) and e.date[:10] < self.since


@dataclass(frozen=True)
class TimelinePage:
    entries: list[gitstore.LogEntry]
    page: int
    has_more: bool


def _matching(agent_dir: Path, f: Filters, want: int) -> list[gitstore.LogEntry]:
    """At least `want` matching entries newest first (fewer when history runs out), asking git
    for a few more commits each round: the first page of 100k commits reads a few dozen."""
    n = max(want * 2, 50)
    while True:
        entries = gitstore.log(agent_dir, limit=n, grep=f.grep())
        matched = [e for e in entries if f.matches(e)]
        if (
            len(matched) >= want
            or len(entries) < n
            or (entries and f.older_than_wanted(entries[-1]))
        ):
            return matched
        n *= 4


def timeline(agent_dir: Path, f: Filters, page: int = 0, per_page: int = PER_PAGE) -> TimelinePage:
    page = max(page, 0)
    matched = _matching(agent_dir, f, (page + 1) * per_page + 1)
    start = page * per_page
    return TimelinePage(matched[start : start + per_page], page, len(matched) > start + per_page)


@dataclass
class Day:
    day: str
    turns: int = 0
    tokens: int = 0
    duration_ms: int = 0

    @property
    def mean_ms(self) -> float:
        return round(self.duration_ms / self.turns) if self.turns else 0


def _int(e: gitstore.LogEntry, key: str) -> int:
    try:
        return int(e.trailers.get(key, 0) or 0)
    except ValueError:
        return 0


def per_day(
    agent_dir: Path, days: int = 30, *, end: dt.date | None = None, cap: int = 20_000
) -> list[Day]:
    """Turns, tokens and mean latency for each of the `days` days ending at `end`, by default
    at the newest turn (an idle agent's chart shows its last active month, not an empty one).
    Reads commits newest first only as far back as the window (at most `cap`)."""
    n = 200
    while True:
        raw = gitstore.log(agent_dir, limit=n, grep="^turn(")
        entries = [e for e in raw if e.subject.startswith("turn(")]
        if not entries and end is None:
            return []
        last = end or dt.date.fromisoformat(entries[0].date[:10])
        first = last - dt.timedelta(days=days - 1)
        if len(raw) < n or raw[-1].date[:10] < first.isoformat() or n >= cap:
            break
        n *= 4
    out = {
        (first + dt.timedelta(days=i)).isoformat(): Day((first + dt.timedelta(days=i)).isoformat())
        for i in range(days)
    }
    for e in entries:
        d = out.get(e.date[:10])
        if d is not None:
            d.turns += 1
            d.tokens += _int(e, "Anima-Tokens-In") + _int(e, "Anima-Tokens-Out")
            d.duration_ms += _int(e, "Anima-Duration-Ms")
    return list(out.values())


def conversations(agent_dir: Path) -> list[str]:
    """The agent's conversation threads (history/<name>/), by name."""
    try:
        with os.scandir(agent_dir / "history") as it:
            return sorted(
                e.name for e in it if e.is_dir(follow_symlinks=False) and valid_id(e.name)
            )
    except FileNotFoundError:
        return []


@dataclass
class Bubble:
    """One chat line: who said it, the text, and the tool calls made on the way (folded)."""

    role: str
    who: str
    text: str
    ts: str = ""
    turn: str = ""
    tools: list[tuple[str, str, str]] = field(default_factory=list)
    pending: bool = False


def _bubbles(turn: list[dict[str, Any]], agent: str) -> Iterator[Bubble]:
    ts, turn_id = str(turn[0].get("ts", "")), str(turn[0].get("turn", ""))
    reply = Bubble("agent", agent, "", ts, turn_id)
    results: dict[str, str] = {}
    for m in turn:
        for b in m.get("content", []):
            if b.get("type") == "tool_result":
                results[str(b.get("tool_use_id", ""))] = str(b.get("content", ""))[:2000]
    for m in turn:
        for b in m.get("content", []):
            kind = b.get("type")
            if kind == "text" and m.get("role") == "user":
                for attrs, body in history.MESSAGE_BODY.findall(b.get("text", "")):
                    who = re.search(r'\bfrom="([^"]*)"', attrs)
                    yield Bubble("user", who.group(1) if who else "user", body.strip(), ts, turn_id)
            elif kind == "text" and b.get("text", "").strip():
                reply.text += ("\n\n" if reply.text else "") + b["text"].strip()
            elif kind == "tool_use":
                args = json.dumps(b.get("input", {}), ensure_ascii=False)[:2000]
                reply.tools.append(
                    (str(b.get("name", "")), args, results.get(str(b.get("id", "")), ""))
                )
    if reply.text or reply.tools:
        yield reply


def chat(agent_dir: Path, agent: str, conversation: str, turns: int = 30) -> list[Bubble]:
    """The last `turns` turns of a conversation as bubbles, then its messages still pending."""
    out = [
        b
        for t in history.recent(agent_dir, check_conversation(conversation), turns)
        for b in _bubbles(t, agent)
    ]
    return out + [
        Bubble("user", m.sender, m.body, m.created, m.id, pending=True)
        for m in pending(agent_dir, agent)
        if m.conversation == conversation
    ]


def pending(agent_dir: Path, agent: str) -> list[Message]:
    """Messages waiting in the inbox, oldest first (unreadable ones are the runtime's to reject)."""
    out = []
    for path in sorted((agent_dir / "inbox").glob("*.md")):
        try:
            out.append(mailbox.read_message(path, agent))
        except (AnimaError, OSError):
            continue
    return out


def confined(root: Path, relative: str) -> Path:
    """`root/relative` when it names a regular file inside `root` reached without a symlink or
    `..`; BadName otherwise. For every path a request names."""
    parts = Path(relative).parts
    if not relative or Path(relative).is_absolute() or any(p in ("..", ".", "") for p in parts):
        raise BadName(f"not a path inside {root.name}/: {relative[:100]!r}")
    path = root
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise BadName(f"{relative[:100]!r} goes through a symlink: not shown")
    if not path.is_file() or not path.resolve().is_relative_to(root.resolve()):
        raise BadName(f"no file {relative[:100]!r} in {root.name}/")
    return path


def note_history(
    agent_dir: Path, rel: str, limit: int = 50
) -> list[tuple[gitstore.LogEntry, list[str]]]:
    """The commits that name memory/`rel` (a turn's "Memory:" reasons, a hand edit's subject),
    newest first, each with the lines that say what was done to the note and why."""
    name = f"memory/{rel}"
    out = []
    for e in gitstore.log(agent_dir, limit=limit, grep=re.escape(name)):
        lines = [ln.strip("- ").strip() for ln in e.body.splitlines() if name in ln]
        out.append((e, lines or ([e.subject] if name in e.subject else [])))
    return out


def read_text(path: Path) -> str:
    """A file shown to a person: at most READ_MAX bytes, undecodable bytes replaced."""
    with open(path, "rb") as fh:
        return fh.read(READ_MAX).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class DeadLetter:
    channel: str
    id: str
    to: str
    body: str
    reason: str


def dead_letters(home: Home) -> list[DeadLetter]:
    """Records each channel adapter gave up on (spool/<channel>/failed/), with why."""
    out = []
    root = home.spool_dir
    if not root.is_dir():
        return []
    for failed in sorted(root.glob("*/failed")):
        for path in sorted(failed.glob("*.md")):
            if path.name.endswith(".error.md") or path.is_symlink():
                continue
            note = path.with_name(f"{path.stem}.error.md")
            try:
                msg = mailbox.read_message(path, failed.parent.name)
                to, body = msg.to, msg.body
            except (BadMessage, AnimaError, OSError):
                to, body = "?", read_text(path)
            reason = read_text(note) if note.is_file() else ""
            out.append(DeadLetter(failed.parent.name, path.stem, to, body[:1000], reason[:2000]))
    return out


def marker(agent_dir: Path) -> str:
    """Changes when the agent commits or its inbox changes: a page showing the chat compares
    the marker it was rendered with to know it must reload."""
    try:
        head = gitstore.head(agent_dir)
    except (AnimaError, OSError):
        head = ""
    try:
        inbox = sorted(p for p in os.listdir(agent_dir / "inbox") if p.endswith(".md"))
    except FileNotFoundError:
        inbox = []
    return f"{head}:{len(inbox)}:{inbox[-1] if inbox else ''}"


REPLYING_SECONDS = 120.0
"""A stream file untouched this long without its end event is a turn that died, not one running."""


def replying(run_dir: Path, agent: str) -> int:
    """Turns of `agent` streaming now: recent stream files whose last event is not `end`."""
    now = time.time()
    count = 0
    try:
        entries = list(os.scandir(run_dir / "stream" / agent))
    except FileNotFoundError:
        return 0
    for e in entries:
        try:
            st = e.stat()
        except FileNotFoundError:
            continue
        if not e.name.endswith(".jsonl") or now - st.st_mtime > REPLYING_SECONDS:
            continue
        with open(e.path, "rb") as fh:
            fh.seek(max(st.st_size - 4096, 0))
            tail = fh.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
        try:
            ended = json.loads(tail).get("t") == "end"
        except (ValueError, AttributeError):
            ended = False  # a line still being written: the turn is running
        count += not ended
    return count
