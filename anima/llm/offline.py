"""The embedded offline model: deterministic rules, no network, honest about what it is.

It is the default when there is no API key and no Ollama, so that a fresh install can run a
real turn (context, tool loop, memory write, commit) with nothing else installed.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from anima.history import gist
from anima.llm.base import Block, ChatRequest, Completed, Event, TextDelta, ToolCall
from anima.llm.registry import register

TAG = "[offline model]"
HELP = (
    "I am Anima's built-in offline model: I follow a few fixed rules instead of thinking. "
    'Try "remember that ...", "what do you remember?", "list files" or '
    '"tell NAME: ...". Set ANTHROPIC_API_KEY or start Ollama to talk to a real model.'
)
_MESSAGE = re.compile(r"<(?:message|untrusted)\b[^>]*>\n(.*?)\n</(?:message|untrusted)>", re.S)
_REMEMBER = re.compile(r"^\s*(?:please\s+)?remember(?:\s+that)?\s+(.+?)\s*\.?\s*$", re.I | re.S)
_TELL = re.compile(
    r"^\s*(?:tell|ask)\s+@?([a-z0-9][a-z0-9_-]*(?:@[A-Za-z0-9][A-Za-z0-9_.-]*)?)\s*[:,]\s*(.+)$",
    re.I | re.S,
)


def _address(to: str) -> str:
    """`Gendry` → `gendry`; `Gendry@vps` → `gendry@vps` (a peer's name keeps its case)."""
    agent, at, peer = to.partition("@")
    return agent.lower() + at + peer


def _last_bodies(req: ChatRequest) -> list[str]:
    for m in reversed(req.messages):
        if m["role"] != "user":
            continue
        texts = "\n".join(b["text"] for b in m["content"] if b["type"] == "text")
        return [b.strip() for b in _MESSAGE.findall(texts)] or ([texts.strip()] if texts else [])
    return []


def _memory_lines(req: ChatRequest) -> list[str]:
    for segment in req.system:
        if "memory/MEMORY.md" in segment:
            return [ln for ln in segment.splitlines() if ln.startswith("- ")]
    return []


def _extract_summary(last: dict[str, Any]) -> str:
    """A summary by rule: the opening words of what each person said."""
    text = "\n".join(b["text"] for b in last["content"] if b["type"] == "text")
    transcript = text.split("</compaction>", 1)[-1]
    return f"{TAG} summary by rule:\n" + gist(transcript, width=120)


def _tool_call(name: str, args: dict[str, object]) -> Block:
    return {
        "type": "tool_use",
        "id": f"toolu_off_{secrets.token_hex(6)}",
        "name": name,
        "input": args,
    }


@dataclass(frozen=True)
class OfflineSettings:
    """The offline model has nothing to configure."""


class OfflineProvider:
    name = "offline"
    default_model = "offline-1"

    def __init__(
        self, name: str = "offline", settings: OfflineSettings | None = None, timeout: float = 0
    ):
        self.name = name

    def respond(self, req: ChatRequest) -> list[Block]:
        """The reply to a request as content blocks (a pure function of the request)."""
        tools = {t.name for t in req.tools}
        last = req.messages[-1] if req.messages else {"role": "user", "content": []}
        content = last["content"]
        results = (
            [b for b in content if b["type"] == "tool_result"] if isinstance(content, list) else []
        )
        if results:
            lines = [
                ("failed: " if r.get("is_error") else "done: ") + str(r["content"]).splitlines()[0]
                if str(r["content"]).strip()
                else "done."
                for r in results
            ]
            return [{"type": "text", "text": f"{TAG} " + " ".join(lines)}]
        if '<compaction step="flush">' in str(last["content"]):
            return [{"type": "text", "text": "done"}]  # rules cannot tell what is durable
        if '<compaction step="summary">' in str(last["content"]):
            return [{"type": "text", "text": _extract_summary(last)}]
        bodies = _last_bodies(req)
        body = bodies[-1] if bodies else ""
        if 'kind="heartbeat"' in str(last["content"]):
            return [{"type": "text", "text": "HEARTBEAT_OK"}]
        if (m := _REMEMBER.match(body)) and "memory" in tools:
            fact = m.group(1).strip()
            return [
                {"type": "text", "text": f"{TAG} I'll remember that."},
                _tool_call(
                    "memory",
                    {
                        "command": "insert",
                        "path": "MEMORY.md",
                        "insert_text": f"- {fact}",
                        "reason": f"asked to remember: {fact[:60]}",
                    },
                ),
            ]
        if (m := _TELL.match(body)) and "send_message" in tools:
            return [
                _tool_call("send_message", {"to": _address(m.group(1)), "text": m.group(2).strip()})
            ]
        if re.search(r"\blist (?:your |the )?files\b", body, re.I) and "list_files" in tools:
            return [_tool_call("list_files", {"path": "."})]
        if re.search(r"\bwhat do you remember\b", body, re.I):
            memory = _memory_lines(req)
            said = "\n".join(memory) if memory else "Nothing yet: my core memory is empty."
            return [{"type": "text", "text": f"{TAG} From my core memory:\n{said}"}]
        quoted = body if len(body) <= 200 else body[:200] + "…"
        return [{"type": "text", "text": f"{TAG} You said: \u00ab{quoted}\u00bb. {HELP}"}]

    def stream(self, request: ChatRequest) -> Iterator[Event]:
        content = self.respond(request)
        for block in content:
            if block["type"] == "text":
                for piece in re.findall(r"\S+\s*|\s+", block["text"]):
                    yield TextDelta(piece)
            else:
                yield ToolCall(block["id"], block["name"], block["input"])
        prompt = sum(len(s) for s in request.system) + len(str(request.messages))
        out = sum(len(str(b)) for b in content)
        yield Completed(
            content=content,
            stop_reason="tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn",
            tokens_in=prompt // 4,
            tokens_out=out // 4,
            model=request.model or self.default_model,
        )


register("offline", OfflineSettings, rank=1000)(OfflineProvider)
