"""One turn, end to end (DESIGN §5): pending messages → context → model/tool loop → files → one
commit. Everything that wakes an agent goes through `process_agent`."""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from anima import (
    attempts,
    budget,
    compaction,
    context,
    gitstore,
    mailbox,
    proposals,
    reflection,
    schedule,
    turnlog,
)
from anima.agent import Agent
from anima.errors import AnimaError, BadConfig, ContextOverflow
from anima.home import Home
from anima.llm import Event, Retrying, TextDelta, ToolCall
from anima.loop import ToolResult, TurnCancelled, run_loop
from anima.mailbox import Pending
from anima.message import Message, iso, utcnow
from anima.tools import ToolContext
from anima.toolset import DEFAULT_SOURCES, ToolSource, compose

log = logging.getLogger(__name__)

HEARTBEAT_OK = "HEARTBEAT_OK"


@dataclass(frozen=True)
class TurnEnded:
    """Emitted last: the turn committed (reply is the outbox message id, if any) or failed."""

    commit: str | None
    reply: str | None
    error: str | None = None


TurnEvent = Event | ToolResult | TurnEnded
OnEvent = Callable[[Message, TurnEvent], None]


@dataclass(frozen=True)
class TurnResult:
    agent: str
    conversation: str
    message_ids: list[str]
    commit: str | None = None
    reply: Message | None = None
    outgoing: list[Message] = field(default_factory=list)
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    tool_calls: int = 0
    duration_ms: int = 0
    error: str | None = None
    rejected: int = 0


def _subject(agent: Agent, batch: list[Message], heartbeat_ok: bool, no_reply: bool) -> str:
    first = batch[0]
    if all(m.kind != "message" for m in batch):
        what = "heartbeat" if first.kind == "heartbeat" else "reminder"
        return f"turn({agent.name}): {what}" + (" (ok, nothing to say)" if heartbeat_ok else "")
    senders = ", ".join(dict.fromkeys(m.sender for m in batch))
    n = len(batch)
    noun = f"{first.channel} message" if n == 1 else f"{n} {first.channel} messages"
    if no_reply:
        return f"turn({agent.name}): read {noun} from {senders} (no reply)"
    return f"turn({agent.name}): reply to {noun} from {senders}"


def _with_hops(batch: list[Message], outgoing: list[Message]) -> list[Message]:
    """Agent messages carry how many agent-to-agent hops their chain has taken (loop cap)."""
    base = max((m.hops for m in batch if m.channel == "agent"), default=0)
    return [
        m.with_(extra={**m.extra, "hops": base + 1}) if m.channel == "agent" else m
        for m in outgoing
    ]


def _reply_for(agent: Agent, batch: list[Message], text: str) -> Message:
    """The turn's answer, addressed where the last message came from. A channel message may name
    the chat to answer in (`chat`, e.g. a group) and the message to thread under (`thread`);
    `answers` lists every message of a batch (the webhook reports each one answered)."""
    trigger = batch[-1]
    extra: dict[str, object] = {}
    if trigger.channel == "agent" or trigger.sender in agent.home.agent_names():
        to, channel = trigger.sender, "agent"
    elif trigger.channel == "timer":  # what a reminder or heartbeat turn says is for the owner
        to, channel = agent.config.owner, "cli"
    else:
        to, channel = trigger.sender, trigger.channel
        chat = str(trigger.extra.get("chat") or "")
        if chat.startswith(f"{channel}:"):
            to = chat
        if trigger.extra.get("thread") is not None:
            extra["thread"] = trigger.extra["thread"]
    if len(batch) > 1:
        extra["answers"] = [m.id for m in batch]
    return Message.create(
        sender=agent.name,
        to=to,
        body=text,
        channel=channel,
        conversation=trigger.conversation,
        in_reply_to=trigger.id,
        extra=extra,
    )


def run_turn(
    agent: Agent,
    pendings: list[Pending],
    *,
    on_event: OnEvent | None = None,
    cancel: threading.Event | None = None,
    sources: Sequence[ToolSource] = DEFAULT_SOURCES,
) -> TurnResult:
    """Run one turn for a batch of one conversation's messages. Call under the agent's lock,
    after `prepare`. On a provider failure the turn is abandoned and the messages stay pending.
    `sources` give the turn its tools (the runtime's built-ins, MCP servers and skills)."""
    started = time.monotonic()
    batch = [p.message for p in pendings]
    conversation = batch[0].conversation
    trigger = batch[-1]

    def emit(ev: TurnEvent) -> None:
        if cancel is not None and cancel.is_set():
            raise TurnCancelled("shutting down")
        if on_event is not None:
            on_event(trigger, ev)

    ctx = context.assemble(agent, batch, conversation)
    if ctx.truncated and compaction.compact(agent, conversation, cancel=cancel):
        ctx = context.assemble(agent, batch, conversation)  # the summary, then what stays live
    tools = compose(agent, sources)
    parent = gitstore.head(agent.path)
    for attempt in (1, 2):
        touched = turnlog.begin(agent.path)
        tctx = ToolContext(
            agent.name,
            agent.path,
            agent.config,
            agent.home.agent_names(),
            batch,
            conversation,
            touched=touched,
            cancel=cancel,
        )
        try:
            limit = reflection.token_limit(agent, batch)
            loop = run_loop(
                agent, ctx.system, ctx.messages(), tools, tctx, emit, cancel, token_limit=limit
            )
            loop.records.insert(0, {"role": "user", "content": ctx.incoming})
            tctx.touched.update(schedule.retire(agent.path, batch))
            break
        except ContextOverflow as exc:
            turnlog.abandon(agent.path)
            # The model's window is smaller than the budget thought: compact harder, once.
            if attempt == 2 or not compaction.compact(
                agent, conversation, force=True, cancel=cancel
            ):
                raise
            log.warning("%s: %s; compacted %s and retrying", agent.name, exc, conversation)
            ctx = context.assemble(agent, batch, conversation)
            parent = gitstore.head(agent.path)
        except BaseException:
            turnlog.abandon(agent.path)
            raise
    text = "\n\n".join(loop.texts).strip()
    heartbeat_ok = trigger.kind == "heartbeat" and text == HEARTBEAT_OK
    silent = heartbeat_ok or text == context.NO_REPLY  # committed, not sent
    reply = _reply_for(agent, batch, text) if text and not silent else None
    outgoing = _with_hops(batch, ([reply] if reply else []) + tctx.outgoing)
    reply = outgoing[0] if reply else None
    turn_id = trigger.id
    now = iso(utcnow())
    for rec in loop.records:
        rec.update(turn=turn_id, ts=now)
    duration_ms = int((time.monotonic() - started) * 1000)
    body_lines = [text.splitlines()[0][:200]] if text else []
    if loop.tools_used:
        used = (f"{n} ×{k}" if k > 1 else n for n, k in sorted(loop.tools_used.items()))
        body_lines += ["", "Tools: " + ", ".join(used)]
    body_lines += tctx.memory_lines()
    record = turnlog.TurnRecord.of_batch(
        agent.path,
        pendings,
        outgoing,
        subject=reflection.subject(agent, batch)
        or _subject(agent, batch, heartbeat_ok, text == context.NO_REPLY),
        body="\n".join(body_lines),
        trailers=[
            ("Anima-Trigger", f"{trigger.kind}:{trigger.channel}:{trigger.sender}"),
            ("Anima-Message", ", ".join(m.id for m in batch)),
            ("Anima-Conversation", conversation),
            ("Anima-Model", loop.model),
            ("Anima-Tokens-In", str(loop.tokens_in)),
            ("Anima-Tokens-Out", str(loop.tokens_out)),
            ("Anima-Tool-Calls", str(loop.tool_calls)),
            ("Anima-Duration-Ms", str(duration_ms)),
        ],
        conversation=conversation,
        records=loop.records,
        touched=sorted(tctx.touched),
        parent=parent,
    )
    sha = turnlog.commit(agent.path, record)
    if on_event is not None:
        on_event(trigger, TurnEnded(sha, reply.id if reply else None))
    return TurnResult(
        agent.name,
        conversation,
        [m.id for m in batch],
        sha,
        reply,
        outgoing,
        loop.model,
        loop.tokens_in,
        loop.tokens_out,
        loop.tool_calls,
        duration_ms,
    )


def prepare(agent: Agent, *, full_check: bool = True) -> None:
    """Under the lock, before a turn: clear what a killed git left, commit a person's hand
    edits, then finish or undo a crashed turn. Hand edits go first, so undoing a turn can only
    put back the paths that turn itself claimed."""
    removed = gitstore.recover(agent.path)
    if removed:
        log.warning("%s: removed stale git locks: %s", agent.name, ", ".join(removed))
    repaired = gitstore.repair_index(agent.path)
    if repaired:
        log.warning("%s: %s", agent.name, repaired)
    if full_check and (tuned := gitstore.tune(agent.path)):
        log.info("%s: %s", agent.name, tuned)
    claimed = turnlog.claimed_paths(agent.path)
    try:
        gitstore.commit_external(agent.path, full=full_check, exclude=claimed)
    except gitstore.GitBusy:
        raise
    except gitstore.GitFailed as exc:
        if not any(m in str(exc) for m in gitstore.INDEX_UNREADABLE):
            raise
        # git could not read its index (a lost shared index, say): rebuild it, try once more
        log.warning("%s: %s", agent.name, gitstore.repair_index(agent.path, why=str(exc)))
        gitstore.commit_external(agent.path, full=full_check, exclude=claimed)
    done = turnlog.recover(agent.path)
    if done is not None:
        log.warning("%s: %s", agent.name, done.note)
        if done.set_aside:
            attempts.note(agent.home, agent.name, done.set_aside, done.note)


MAX_BATCH = 50
"""Messages of one conversation answered in one turn at most; a flood is taken in batches."""


def group_by_conversation(pendings: Iterable[Pending]) -> list[list[Pending]]:
    groups: dict[str, list[Pending]] = {}
    for p in pendings:
        groups.setdefault(p.message.conversation, []).append(p)
    return [g[i : i + MAX_BATCH] for g in groups.values() for i in range(0, len(g), MAX_BATCH)]


OnCommit = Callable[[str, str, "TurnResult"], object]
"""Called with (agent, the HEAD the turn started from, its result) right after each commit."""


DISK_FULL = ("No space left on device", "Disk quota exceeded", "Out of diskspace")
"""How the kernel and git (`fatal: Out of diskspace` from its object writer) say the disk is full."""


def describe(exc: BaseException) -> str:
    """One line for a failure, for status, the log and the CLI."""
    if isinstance(exc, AnimaError) and not _disk_full(exc):
        return str(exc)
    if _disk_full(exc):
        where = getattr(exc, "filename", None) or "writing"
        return f"the disk is full ({where}): free space; nothing was lost"
    return f"{type(exc).__name__}: {exc}"


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(w in str(exc) for w in DISK_FULL)


def _environmental(exc: BaseException) -> bool:
    """A failure of the machine (or a person's git at work), not of the messages: it counts no
    attempt against them."""
    return isinstance(exc, gitstore.GitBusy) or _disk_full(exc)


def process_agent(
    home: Home,
    name: str,
    *,
    on_event: OnEvent | None = None,
    on_commit: OnCommit | None = None,
    lock_timeout: float | None = None,
    settle: float = 0.0,
    cancel: threading.Event | None = None,
    full_check: bool = True,
    sources: Sequence[ToolSource] = DEFAULT_SOURCES,
    may_run: Callable[[Home, str], bool] | None = None,
) -> AgentRun:
    """Handle every message pending for `name` now: one turn per conversation batch. A failed
    turn, whatever it raised, is reported in its result and leaves its messages pending for a
    later run (until they run out of attempts and are rejected with their error history); the
    agent's other conversations go on. `on_commit` routes each turn as soon as it commits.
    `may_run` is asked under the agent's lock (an agent moved to another host meanwhile runs
    no turn here): False leaves the messages pending."""
    agent = Agent.open(home, name)
    run = AgentRun(name)
    with gitstore.agent_lock(home.run_dir / "locks" / f"{name}.lock", timeout=lock_timeout):
        if may_run is not None and not may_run(home, name):
            run.elsewhere = True
            return run
        try:
            prepare(agent, full_check=full_check)
            run.base = gitstore.head(agent.path)
            scan = mailbox.scan(agent.path, name, settle=settle)
        except Exception as exc:  # a damaged repo or a full disk: report, the runtime retries
            log_failure(name, exc)
            run.results.append(TurnResult(name, "", [], error=describe(exc)))
            return run
        run.unsettled, run.writing = scan.unsettled, scan.writing
        for group in group_by_conversation(scan.pending):
            parent = gitstore.head(agent.path)
            batch = [p.message for p in group]
            try:
                if not budget.admits(agent, batch):  # held until `anima resume`, no attempt
                    run.paused += _ids(group)
                    continue
                result = proposals.answer(agent, group) or run_turn(
                    agent, group, on_event=on_event, cancel=cancel, sources=sources
                )
            except TurnCancelled:
                run.cancelled = True
                break
            except BadConfig as exc:  # the agent's fault, not the message's: no attempt counted
                run.results.append(
                    TurnResult(name, _conversation(group), _ids(group), error=str(exc))
                )
                break
            except Exception as exc:
                if not _failed(agent, run, group, exc, on_event):
                    break
                continue
            attempts.clear(home, name, _ids(group))
            budget.record(agent, batch, result.tokens_in + result.tokens_out)
            run.results.append(result)
            if on_commit is not None:
                try:
                    on_commit(name, parent, result)
                except Exception:  # routing catches up after the pass (router.route_run)
                    log.exception("%s: routing turn %s failed", name, (result.commit or "")[:8])
        proposals.after_pass(agent, run)  # auto-apply, and revert a change its turns failed on
    return run


def _ids(group: list[Pending]) -> list[str]:
    return [p.message.id for p in group]


def _conversation(group: list[Pending]) -> str:
    return group[0].message.conversation


def log_failure(name: str, exc: BaseException) -> None:
    """One line for what a person can act on; the traceback only for a bug."""
    if isinstance(exc, AnimaError) or _environmental(exc):
        log.warning("%s: %s", name, describe(exc))
    else:  # a bug: keep the traceback for whoever fixes it
        log.error("%s: turn failed with an unexpected error", name, exc_info=exc)


def _failed(
    agent: Agent,
    run: AgentRun,
    group: list[Pending],
    exc: Exception,
    on_event: OnEvent | None,
) -> bool:
    """Account for a failed turn: count an attempt against its messages (unless the machine
    failed, not they), and finish or undo whatever the turn left half-written. Returns whether
    the pass may go on to the agent's next conversation."""
    name, error = agent.name, describe(exc)
    log_failure(name, exc)
    if on_event is not None:
        with contextlib.suppress(Exception):
            on_event(group[-1].message, TurnEnded(None, None, error))
    rejected: list[object] = []
    environmental = _environmental(exc)
    if not environmental:
        try:
            max_attempts = agent.home.config().runtime.max_attempts
            rejected = list(attempts.record_failure(agent.home, name, group, error, max_attempts))
        except Exception as again:
            log.warning("%s: could not count the failed attempt: %s", name, describe(again))
    run.results.append(
        TurnResult(name, _conversation(group), _ids(group), error=error, rejected=len(rejected))
    )
    try:
        done = turnlog.recover(agent.path)  # a record left mid-commit is finished now
    except Exception as again:
        log_failure(name, again)
        return False
    if done is not None:
        log.warning("%s: %s", name, done.note)
    return not environmental


@dataclass
class AgentRun:
    """What one pass over an agent's inbox did."""

    agent: str
    results: list[TurnResult] = field(default_factory=list)
    base: str = ""
    """HEAD before this pass's turns (after any external commit)."""
    unsettled: int = 0
    writing: int = 0
    cancelled: bool = False
    paused: list[str] = field(default_factory=list)
    """Self-started messages held by a used-up budget (anima/budget.py): not a failure, so
    nothing re-wakes the agent for them; `anima resume` does."""
    elsewhere: bool = False
    """Not run here: another host holds the agent's lease (its turns and routing are there)."""

    @property
    def failed(self) -> bool:
        return any(r.error for r in self.results)


__all__ = [
    "TurnEnded",
    "TextDelta",
    "ToolCall",
    "Retrying",
    "ToolResult",
    "TurnResult",
    "process_agent",
    "run_turn",
    "prepare",
]
