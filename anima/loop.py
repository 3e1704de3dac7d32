"""The model/tool loop: call the model (with retries and provider fallback), run the tools it
asks for, feed the results back. Used by turns and by compaction's silent steps."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from anima.agent import Agent
from anima.errors import AnimaError, ContextOverflow, ProviderError
from anima.home import Home
from anima.llm import ChatRequest, Completed, get_provider
from anima.llm.base import Block, stream_with_retries
from anima.llm.registry import choose
from anima.tools import Tool, ToolContext, run_tool

log = logging.getLogger(__name__)

Emit = Callable[[Any], None]


class TurnCancelled(AnimaError):
    """The runtime is shutting down: the turn is abandoned uncommitted, its messages pending."""


@dataclass(frozen=True)
class ToolResult:
    """Emitted after a tool ran (for the REPL's compact tool lines)."""

    id: str
    name: str
    content: str
    is_error: bool


@dataclass
class LoopResult:
    """What the model/tool loop produced."""

    records: list[dict[str, Any]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    tool_calls: int = 0
    model: str = ""
    tools_used: dict[str, int] = field(default_factory=dict)
    """Calls per tool name, for the commit body."""


def _pause(cancel: threading.Event | None) -> Callable[[float], None]:
    """The wait between retries: it ends at once when the runtime shuts down."""

    def pause(delay: float) -> None:
        if cancel is None:
            time.sleep(delay)
        elif cancel.wait(delay):
            raise TurnCancelled("shutting down")

    return pause


def call_model(
    chain: list[tuple[str, str]],
    home: Home,
    request: ChatRequest,
    emit: Emit,
    cancel: threading.Event | None = None,
) -> tuple[Completed, list[tuple[str, str]]]:
    """One model call with retries, falling back along the provider chain. Returns the
    completion and the chain from the provider that answered (it stays for the turn)."""
    settings = home.config().providers
    errors = []
    for i, (name, model) in enumerate(chain):
        try:
            provider = get_provider(name, settings)
            req = ChatRequest(
                model or provider.default_model,
                request.system,
                request.messages,
                request.tools,
                request.max_tokens,
                request.temperature,
            )
            completed = None
            for ev in stream_with_retries(
                provider,
                req,
                retries=settings.retries,
                base=settings.backoff,
                cap=settings.max_backoff,
                sleep=_pause(cancel),
            ):
                if isinstance(ev, Completed):
                    completed = ev
                else:
                    emit(ev)
            if completed is None:
                raise ProviderError(f"{name} returned no completion", retryable=False)
            if not completed.model:
                completed = Completed(
                    completed.content,
                    completed.stop_reason,
                    completed.tokens_in,
                    completed.tokens_out,
                    req.model,
                )
            return completed, chain[i:]
        except ContextOverflow:
            raise  # another provider will not fit it either: the caller compacts
        except ProviderError as exc:
            said = str(exc)  # an endpoint's own messages may name it already
            errors.append(said if said.startswith(f"{name}: ") else f"{name}: {said}")
            log.warning("provider %s failed: %s", name, exc)
    raise ProviderError("; ".join(errors))


def run_loop(
    agent: Agent,
    system: list[str],
    messages: list[dict[str, Any]],
    tools: dict[str, Tool],
    tctx: ToolContext,
    emit: Emit,
    cancel: threading.Event | None = None,
    *,
    token_limit: int = 0,
) -> LoopResult:
    """Call the model, run the tools it asks for, feed the results back, until it answers
    without tools, `max_steps` calls were made, or (`token_limit`, 0: none) the calls have
    spent that many tokens. `records` gets every message added."""
    cfg = agent.config
    specs = [t.spec for t in tools.values()]
    chain = choose(cfg, agent.home.config())
    messages = list(messages)
    out = LoopResult()
    for _step in range(cfg.max_steps):
        if cancel is not None and cancel.is_set():
            raise TurnCancelled("shutting down")
        if token_limit and out.tokens_in + out.tokens_out >= token_limit:
            return _stopped(out, f"the budget of {token_limit} tokens for this turn was spent")
        request = ChatRequest("", system, messages, specs, cfg.max_tokens, cfg.temperature)
        completed, chain = call_model(chain, agent.home, request, emit, cancel)
        out.tokens_in += completed.tokens_in
        out.tokens_out += completed.tokens_out
        out.model = f"{chain[0][0]}/{completed.model}"
        content = completed.content or [{"type": "text", "text": ""}]
        messages.append({"role": "assistant", "content": content})
        out.records.append({"role": "assistant", "content": content})
        out.texts += [b["text"] for b in content if b["type"] == "text" and b["text"].strip()]
        uses = [b for b in content if b["type"] == "tool_use"]
        if not uses:
            return out
        results: list[Block] = []
        for use in uses:
            result, is_error = run_tool(tools, tctx, use["name"], use["input"])
            out.tool_calls += 1
            out.tools_used[use["name"]] = out.tools_used.get(use["name"], 0) + 1
            emit(ToolResult(use["id"], use["name"], result, is_error))
            results.append(
                {
                    "type": "tool_result",
                    "tool_use_id": use["id"],
                    "content": result,
                    "is_error": is_error,
                }
            )
        messages.append({"role": "user", "content": results})
        out.records.append({"role": "user", "content": results})
    return _stopped(out, f"the limit of {cfg.max_steps} model calls in one turn was reached")


def _stopped(out: LoopResult, why: str) -> LoopResult:
    """End the loop early, saying why in the turn's record and reply."""
    note = f"[stopped: {why}]"
    out.records.append({"role": "assistant", "content": [{"type": "text", "text": note}]})
    out.texts.append(note)
    return out
