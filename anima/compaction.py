"""Compaction (DESIGN §6): keep a long conversation inside its budget without losing anything.

When a thread's live history no longer fits `budget.history_tokens`:
1. a checkpoint commit marks the state before anything changes;
2. a silent flush step shows the model the turns about to leave its context and lets it save
   what is durable with the memory tool;
3. those turns are summarised into the day's journal (`memory/journal/YYYY-MM-DD.md`), and the
   thread's `compaction.json` moves the start of the live history past them, keeping a rolling
   summary that stands in for them in context.
The day files are never rewritten: every message stays in history/ and in git, and search
finds it. Steps 2–3 run under the turn's write-ahead record and land as one commit.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from anima import context, gitstore, history, memory, turnlog
from anima.agent import Agent
from anima.errors import ContextOverflow
from anima.fsutil import write_atomic
from anima.loop import Emit, TurnCancelled, run_loop
from anima.message import utcnow
from anima.tools import ToolContext, available

FLUSH = '<compaction step="flush">'
SUMMARY = '<compaction step="summary">'
MIN_PIECE = 2000
"""A piece this short that still overflows the model gets a mechanical summary instead."""
SUMMARY_CHARS = 3000
"""The rolling summary kept in context (the newest part, when it grows past this)."""

FLUSH_PROMPT = f"""{FLUSH}
The turns below are about to leave your context (they stay on disk and in search). Save
anything durable that is not in memory yet — facts about people (memory/people/<name>.md),
decisions, commitments, preferences — with the memory tool. Do not save small talk. When
done, answer with one word: done. Nobody sees this step.
</compaction>

"""

SUMMARY_PROMPT = f"""{SUMMARY}
Summarise the turns below for your journal: who said what that matters, decisions, open
questions and promises, with names and dates. At most 12 short bullet points. Answer with the
summary only.
</compaction>

"""


def _ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": text}]}]


def _split(turns: list[history.Turn], chars: int, agent: str) -> list[str]:
    """Transcript pieces of at most about `chars` characters, each of whole turns."""
    pieces: list[str] = []
    group: list[list[dict[str, Any]]] = []
    size = 0
    for msgs, cost in turns:
        if group and size + cost * history.CHARS_PER_TOKEN > chars:
            pieces.append(history.transcript(group, agent))
            group, size = [], 0
        group.append(msgs)
        size += cost * history.CHARS_PER_TOKEN
    if group:
        pieces.append(history.transcript(group, agent))
    return [p[:chars] for p in pieces]


def _journal_entry(
    agent: Agent,
    conversation: str,
    turns: list[history.Turn],
    text: str,
    claim: Callable[[str], None],
) -> str:
    """Append the summary to the day's journal; a day over the note cap continues in -2, -3…
    `claim` names the note before it is written (the turn record). Returns the note's path
    relative to the agent directory."""
    now = utcnow()
    day = now.strftime("%Y-%m-%d")
    first, last = turns[0][0][0].get("ts", ""), turns[-1][0][0].get("ts", "")
    entry = (
        f"\n## {now.strftime('%H:%M')} UTC · conversation `{conversation}` "
        f"({len(turns)} turns, {first[:16]} → {last[:16]})\n\n{text.strip()}\n"
    )
    cap = agent.config.budget.note_chars
    for n in itertools.count(1):
        path = agent.memory_dir / memory.JOURNAL / (f"{day}.md" if n == 1 else f"{day}-{n}.md")
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        if not old or len(old) + len(entry) <= cap:
            head = old or f"---\ndescription: journal of {day} (compacted conversations)\n---\n"
            claim(str(path.relative_to(agent.path)))
            write_atomic(path, (head + entry)[:cap])
            return str(path.relative_to(agent.path))
    raise AssertionError("unreachable")


def _digest(
    agent: Agent,
    piece: str,
    tctx: ToolContext,
    emit: Emit,
    cancel: threading.Event | None,
) -> list[str]:
    """Flush and summarise one transcript piece; halve it when it does not fit the model."""
    system = context.system_prompt(agent, tctx.conversation)  # with what a flush saved
    memory_tool = {t.name: t for t in available(agent.config) if t.name == "memory"}
    try:
        if memory_tool:
            run_loop(agent, system, _ask(FLUSH_PROMPT + piece), memory_tool, tctx, emit, cancel)
        out = run_loop(agent, system, _ask(SUMMARY_PROMPT + piece), {}, tctx, emit, cancel)
        return ["\n".join(out.texts).strip() or history.gist(piece)]
    except ContextOverflow:
        if len(piece) < MIN_PIECE:
            return [history.gist(piece)]
        cut = piece.rfind("\n[", 0, len(piece) // 2 + 1)  # at a turn boundary if there is one
        cut = cut if cut > 0 else len(piece) // 2
        return _digest(agent, piece[:cut], tctx, emit, cancel) + _digest(
            agent, piece[cut:], tctx, emit, cancel
        )


def compact(
    agent: Agent,
    conversation: str,
    *,
    force: bool = False,
    cancel: threading.Event | None = None,
) -> str | None:
    """Compact the thread if it has turns to drop; returns the compaction commit, or None.
    Keeps the newest turns within half the budget; `force` (after a context-overflow error)
    keeps at most half of what was live."""
    cfg = agent.config
    state = history.compaction(agent.path, conversation)
    turns = history.live_turns(agent.path, conversation, state.through_turn)
    keep_tokens = cfg.budget.history_tokens // 2
    if force:  # the model's window is smaller than the budget: halve what is live
        keep_tokens = min(keep_tokens // 2, sum(cost for _, cost in turns) // 2)
    kept = used = 0
    for _msgs, cost in reversed(turns):
        if used + cost > keep_tokens:
            break
        used += cost
        kept += 1
    drop = turns[: len(turns) - kept]
    if not drop:
        return None
    name = agent.name
    trailers = [("Anima-Conversation", conversation), ("Anima-Turns", str(len(drop)))]
    gitstore.commit(
        agent.path,
        f"checkpoint({name}): before compacting {len(drop)} turns of {conversation}",
        trailers=trailers,
    )

    def silent(_ev: object) -> None:  # nobody sees these steps; shutdown still stops them
        if cancel is not None and cancel.is_set():
            raise TurnCancelled("shutting down")

    emit: Emit = silent
    touched = turnlog.begin(agent.path)
    try:
        tctx = ToolContext(
            name, agent.path, cfg, agent.home.agent_names(), [], conversation, touched=touched
        )
        pieces = _split(drop, cfg.budget.history_tokens * history.CHARS_PER_TOKEN, name)
        summaries = [line for p in pieces for line in _digest(agent, p, tctx, emit, cancel)]
        summary = "\n".join(summaries)
        journal = _journal_entry(agent, conversation, drop, summary, touched.add)
        rolling = (state.summary + "\n" + summary).strip()[-SUMMARY_CHARS:]
        new_state = history.Compaction(drop[-1][0][0]["turn"], rolling, state.count + 1)
        state_file = history.thread_dir(agent.path, conversation) / history.COMPACTION
        touched.add(str(state_file.relative_to(agent.path)))
        state_path = history.save_compaction(agent.path, conversation, new_state)
    except BaseException:
        turnlog.abandon(agent.path)
        raise
    body = [f"{len(drop)} turns summarised into {journal}; {kept} newest turns stay live."]
    body += tctx.memory_lines()
    record = turnlog.TurnRecord(
        subject=f"compact({name}): {len(drop)} turns of {conversation} into {journal}",
        body="\n".join(body),
        trailers=trailers,
        archive=[],
        outbox=[],
        history_path="",
        history_records=[],
        touched=sorted({journal, state_path, *tctx.touched}),
    )
    return turnlog.commit(agent.path, record)
