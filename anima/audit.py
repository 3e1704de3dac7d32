"""The audit log: an agent's turns as git records them — list, show, undo, statistics."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from anima import attempts, gitstore
from anima.agent import Agent
from anima.errors import AnimaError
from anima.turn import prepare


def turns(agent: Agent, limit: int | None = 20, grep: str | None = None) -> list[gitstore.LogEntry]:
    entries = gitstore.log(agent.path, limit=None if limit is None else limit * 3 + 10, grep=grep)
    out = [e for e in entries if e.subject.startswith("turn(")]
    return out if limit is None else out[:limit]


def resolve(agent: Agent, turn: str | None) -> gitstore.LogEntry:
    """A turn by sha prefix, by `~N` (N turns before the last, as in git), or the last one.
    A sha may also name an approved proposal's commit (`proposal(NAME): apply ID`)."""
    all_turns = turns(agent, limit=None)
    if turn is not None and not (turn.startswith("~") and turn[1:].isdigit()):
        matches = [t for t in all_turns if t.sha.startswith(turn)]
        if not matches:
            applied = gitstore.log(agent.path, limit=None, grep="Anima-Proposal:")
            matches = [
                e for e in applied if e.subject.startswith("proposal(") and e.sha.startswith(turn)
            ]
        if len(matches) != 1:
            raise AnimaError(
                f"no single turn of {agent.name} matches {turn!r}: use a sha from `anima log`"
            )
        return matches[0]
    if not all_turns:
        raise AnimaError(f"{agent.name} has no turns yet")
    if turn is None:
        return all_turns[0]
    n = int(turn[1:])
    if n >= len(all_turns):
        raise AnimaError(f"{agent.name} has only {len(all_turns)} turns")
    return all_turns[n]


def show(agent: Agent, turn: str | None) -> str:
    return gitstore.show(agent.path, resolve(agent, turn).sha)


def undo(agent: Agent, turn: str | None = None) -> tuple[gitstore.LogEntry, str]:
    """Revert a turn with `git revert` (both stay in history). The next turn no longer sees its
    history, memory edits or files; its messages stay archived, so they are not answered again."""
    target = resolve(agent, turn)
    lock = agent.home.run_dir / "locks" / f"{agent.name}.lock"
    with gitstore.agent_lock(lock, timeout=30):
        prepare(agent)
        sha = gitstore.revert(agent.path, target.sha)
    return target, sha


@dataclass(frozen=True)
class Stats:
    turns: int
    tokens_in: int
    tokens_out: int
    tool_calls: int
    failing_messages: int
    rejected: int
    duration_ms: dict[str, float]
    models: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _pct(values: list[int], p: float) -> float:
    s = sorted(values)
    return float(s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]) if s else 0.0


def stats(agent: Agent) -> Stats:
    entries = turns(agent, limit=None)

    def total(key: str) -> int:
        return sum(int(e.trailers.get(key, 0) or 0) for e in entries)

    durations = [int(e.trailers.get("Anima-Duration-Ms", 0) or 0) for e in entries]
    models: dict[str, int] = {}
    for e in entries:
        m = e.trailers.get("Anima-Model", "?")
        models[m] = models.get(m, 0) + 1
    rejected_dir = agent.inbox / "rejected"
    return Stats(
        turns=len(entries),
        tokens_in=total("Anima-Tokens-In"),
        tokens_out=total("Anima-Tokens-Out"),
        tool_calls=total("Anima-Tool-Calls"),
        failing_messages=len(attempts.load(agent.home, agent.name)),
        rejected=len(list(rejected_dir.glob("*.error.md"))) if rejected_dir.is_dir() else 0,
        duration_ms={
            "p50": _pct(durations, 50),
            "p95": _pct(durations, 95),
            "p99": _pct(durations, 99),
            "mean": round(statistics.fmean(durations), 1) if durations else 0.0,
        },
        models=models,
    )
