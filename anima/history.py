"""Conversation threads: history/<conversation>/YYYY-MM/YYYY-MM-DD.jsonl of provider-neutral
messages. Sharded by month like archive/ and outbox/, so a turn's commit rewrites a small tree;
day files of the older flat layout (history/<conversation>/YYYY-MM-DD.jsonl) are read as well.

Each line is one message {"role", "content": [blocks], "turn", "ts"}. A turn always starts with a
user message and ends with an assistant message, and every tool_use is answered by its
tool_result, so whole turns can be dropped from the front without splitting a tool pair.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from anima.fsutil import append_durable, write_atomic

CHARS_PER_TOKEN = 4
MESSAGE_BODY = re.compile(
    r"<(?:message|untrusted)\b([^>]*)>\n(.*?)\n</(?:message|untrusted)>", re.S
)
_FROM = re.compile(r'\bfrom="([^"]*)"')


def thread_dir(agent_dir: Path, conversation: str) -> Path:
    return agent_dir / "history" / conversation


def day_file(agent_dir: Path, conversation: str, day: str) -> Path:
    """Where turns of `day` (YYYY-MM-DD) are written: in the month's directory."""
    return thread_dir(agent_dir, conversation) / day[:7] / f"{day}.jsonl"


_MONTH = re.compile(r"\d{4}-\d{2}")


def _newest_day_files(agent_dir: Path, conversation: str) -> Iterator[Path]:
    """A thread's day files, newest first, in both layouts: month directories and the flat
    files older versions wrote. A month directory is listed only when the caller gets that far
    back (a window reads the newest few days of years of history). On the day of an upgrade
    both layouts may hold that day: the flat file (written first) is the older."""
    d = thread_dir(agent_dir, conversation)
    try:
        top = list(os.scandir(d))
    except (FileNotFoundError, NotADirectoryError):
        return
    months: dict[str, list[tuple[str, int, str]]] = {}
    for e in top:
        if e.name.endswith(".jsonl") and e.is_file():
            months.setdefault(e.name[:7], []).append((e.name, 0, e.path))
        elif _MONTH.fullmatch(e.name) and e.is_dir(follow_symlinks=False):
            months.setdefault(e.name, [])
    for month in sorted(months, reverse=True):
        files = months[month]
        sub = os.path.join(d, month)
        if os.path.isdir(sub):
            files += [(n, 1, os.path.join(sub, n)) for n in os.listdir(sub) if n.endswith(".jsonl")]
        for _, _, path in sorted(files, reverse=True):
            yield Path(path)


def day_files(agent_dir: Path, conversation: str) -> list[Path]:
    """A thread's day files, oldest first, in both layouts (see `_newest_day_files`)."""
    return list(reversed(list(_newest_day_files(agent_dir, conversation))))


COMPACTION = "compaction.json"


@dataclass(frozen=True)
class Compaction:
    """Where a thread's live part starts: turns up to `through_turn` were summarised into the
    journal (and stay in the day files) and `summary` stands in for them in context."""

    through_turn: str = ""
    summary: str = ""
    count: int = 0


def compaction(agent_dir: Path, conversation: str) -> Compaction:
    try:
        data = json.loads((thread_dir(agent_dir, conversation) / COMPACTION).read_text("utf-8"))
        return Compaction(str(data["through_turn"]), str(data["summary"]), int(data["count"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return Compaction()


def save_compaction(agent_dir: Path, conversation: str, state: Compaction) -> str:
    """Write the state; returns its path relative to the agent directory."""
    path = thread_dir(agent_dir, conversation) / COMPACTION
    write_atomic(path, json.dumps(asdict(state), ensure_ascii=False, indent=1) + "\n")
    return str(path.relative_to(agent_dir))


def append(path: Path, records: list[dict[str, Any]]) -> None:
    """Append a turn's messages in one write, so a reader never sees half a turn's lines."""
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
    append_durable(path, text)


def estimate_tokens(content: Any) -> int:
    return len(json.dumps(content, ensure_ascii=False)) // CHARS_PER_TOKEN + 4


@dataclass(frozen=True)
class Window:
    messages: list[dict[str, Any]]
    """Messages for the model, oldest first, roles alternating."""
    truncated: bool
    """Older turns exist that did not fit."""
    tokens: int


Turn = tuple[list[dict[str, Any]], int]
"""A turn's messages and their estimated token cost."""


@functools.lru_cache(maxsize=128)
def _day_turns_cached(path: Path, mtime_ns: int, size: int) -> tuple[Turn, ...]:
    # Keyed by mtime and size: past days never change, today's file only grows.
    return tuple((t, sum(estimate_tokens(m["content"]) for m in t)) for t in day_turns(path))


def day_turns(path: Path) -> list[list[dict[str, Any]]]:
    """One day file's turns, in order, each a list of its messages."""
    turns: list[list[dict[str, Any]]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line after a crash: that turn was never committed
        if turns and turns[-1][0].get("turn") == rec.get("turn"):
            turns[-1].append(rec)
        else:
            turns.append([rec])
    return turns


def _newest_turns(agent_dir: Path, conversation: str, after_turn: str = "") -> Iterator[Turn]:
    """Turns newest first, reading day files only as far back as the caller iterates, and
    stopping at `after_turn` (the last turn compaction summarised)."""
    for f in _newest_day_files(agent_dir, conversation):
        st = f.stat()
        for turn in reversed(_day_turns_cached(f, st.st_mtime_ns, st.st_size)):
            if after_turn and turn[0][0].get("turn") == after_turn:
                return
            yield turn


def live_turns(agent_dir: Path, conversation: str, after_turn: str = "") -> list[Turn]:
    """Every turn after `after_turn`, oldest first."""
    return list(reversed(list(_newest_turns(agent_dir, conversation, after_turn))))


def window(agent_dir: Path, conversation: str, budget_tokens: int, after_turn: str = "") -> Window:
    """The newest whole turns after `after_turn` that fit in `budget_tokens`. Cost is bounded by
    the budget, not by the length of the conversation."""
    picked: list[list[dict[str, Any]]] = []
    used = 0
    truncated = False
    for turn, cost in _newest_turns(agent_dir, conversation, after_turn):
        if used + cost > budget_tokens:
            truncated = True
            break
        picked.append(turn)
        used += cost
    messages: list[dict[str, Any]] = []
    for turn in reversed(picked):
        for m in turn:
            if messages and messages[-1]["role"] == m["role"]:
                # Defensive merge: providers need alternating roles.
                messages[-1] = {
                    "role": m["role"],
                    "content": messages[-1]["content"] + m["content"],
                }
            else:
                messages.append({"role": m["role"], "content": list(m["content"])})
    return Window(messages, truncated, used)


def recent(agent_dir: Path, conversation: str, n_turns: int) -> list[list[dict[str, Any]]]:
    """The last `n_turns` turns of a conversation, oldest first (for a person to read)."""
    out = []
    for turn, _cost in _newest_turns(agent_dir, conversation):
        out.append(turn)
        if len(out) >= n_turns:
            break
    return list(reversed(out))


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def transcript(turns: list[list[dict[str, Any]]], agent: str) -> str:
    """Turns as plain text for a person or a summariser: who said what, tool calls as one line
    each (their inputs and results clipped), the recall and always blocks left out."""
    lines: list[str] = []
    for turn in turns:
        lines.append(f"[{turn[0].get('ts', '')}]")
        for m in turn:
            for b in m["content"]:
                if b["type"] == "text" and m["role"] == "user":
                    for attrs, body in MESSAGE_BODY.findall(b["text"]):
                        who = _FROM.search(attrs)
                        lines.append(f"{who.group(1) if who else 'user'}: {body.strip()}")
                elif b["type"] == "text" and b["text"].strip():
                    lines.append(f"{agent}: {b['text'].strip()}")
                elif b["type"] == "tool_use":
                    args = json.dumps(b["input"], ensure_ascii=False)
                    lines.append(f"  ({agent} used {b['name']}: {_clip(args, 200)})")
                elif b["type"] == "tool_result":
                    lines.append(f"  (result: {_clip(str(b['content']), 200)})")
    return "\n".join(lines)


def gist(transcript_text: str, lines: int = 12, width: int = 160) -> str:
    """A summary by rule of a `transcript()`: the opening words of what each speaker said."""
    said = [
        ln for ln in transcript_text.splitlines() if ":" in ln and not ln.startswith(("[", " "))
    ]
    return "\n".join(f"- {ln[:width]}" for ln in said[:lines])
