"""Ollama's native /api/chat through the official SDK: streaming NDJSON, tool calls."""

from __future__ import annotations

import functools
import secrets
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from anima.errors import ProviderError, provider_error
from anima.llm.base import (
    Block,
    ChatRequest,
    Completed,
    Event,
    TextDelta,
    ToolCall,
    is_transport_error,
)
from anima.llm.registry import register

DEFAULT_HOST = "http://127.0.0.1:11434"


@dataclass(frozen=True)
class OllamaSettings:
    """`[providers.ollama]` (or any `[providers.NAME] kind = "ollama"`)."""

    host: str = ""
    """Empty: http://127.0.0.1:11434."""

    @property
    def url(self) -> str:
        return self.host or DEFAULT_HOST


@functools.lru_cache(maxsize=8)
def reachable(host: str) -> bool:
    """Whether an Ollama server answers at `host` (asked once per process)."""
    try:
        with urllib.request.urlopen(f"{host.rstrip('/')}/api/tags", timeout=0.5) as resp:
            return bool(resp.status == 200)
    except (OSError, ValueError):
        return False


def to_ollama_messages(req: ChatRequest) -> list[dict[str, Any]]:
    """Neutral blocks → Ollama chat messages. Tool results become role=tool messages that
    carry the tool's name (Ollama has no call ids)."""
    out: list[dict[str, Any]] = []
    if any(req.system):
        out.append({"role": "system", "content": "\n\n".join(s for s in req.system if s)})
    names: dict[str, str] = {}
    for m in req.messages:
        texts = [b["text"] for b in m["content"] if b["type"] == "text"]
        if m["role"] == "assistant":
            calls = [b for b in m["content"] if b["type"] == "tool_use"]
            for c in calls:
                names[c["id"]] = c["name"]
            msg: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts)}
            if calls:
                msg["tool_calls"] = [
                    {"function": {"name": c["name"], "arguments": c["input"]}} for c in calls
                ]
            out.append(msg)
            continue
        for b in m["content"]:
            if b["type"] == "tool_result":
                out.append(
                    {
                        "role": "tool",
                        "content": ("ERROR: " if b.get("is_error") else "") + str(b["content"]),
                        "tool_name": names.get(b["tool_use_id"], ""),
                    }
                )
        if texts:
            out.append({"role": "user", "content": "\n\n".join(texts)})
    return out


def _translate(sdk: Any, exc: Exception) -> Exception:
    """SDK and transport errors → ProviderError; anything else is a bug and is re-raised."""
    if isinstance(exc, sdk.ResponseError):
        status = exc.status_code
        return provider_error(
            f"Ollama error {status}: {exc.error}", retryable=status == 429 or status >= 500
        )
    if isinstance(exc, (ConnectionError, OSError)):
        return ProviderError(f"Ollama unreachable: {exc}", retryable=True)
    if is_transport_error(exc):  # cut streams, timeouts
        return ProviderError(f"Ollama stream failed: {exc}", retryable=True)
    return exc


class OllamaProvider:
    name = "ollama"
    default_model = "llama3.2"

    def __init__(self, name: str, settings: OllamaSettings, timeout: float):
        import ollama  # lazy

        self.name = name
        self._sdk = ollama
        self._client = ollama.Client(host=settings.url, timeout=timeout)

    def stream(self, request: ChatRequest) -> Iterator[Event]:
        sdk = self._sdk
        tools = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.schema},
            }
            for t in request.tools
        ]
        options: dict[str, Any] = {"num_predict": request.max_tokens}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        model = request.model or self.default_model
        text: list[str] = []
        calls: list[ToolCall] = []
        done = None
        try:
            for chunk in self._client.chat(
                model=model,
                messages=to_ollama_messages(request),
                tools=tools or None,
                stream=True,
                options=options,
            ):
                piece = chunk.message.content or ""
                if piece:
                    text.append(piece)
                    yield TextDelta(piece)
                for tc in chunk.message.tool_calls or ():
                    call = ToolCall(
                        f"call_{secrets.token_hex(6)}",
                        tc.function.name,
                        dict(tc.function.arguments or {}),
                    )
                    calls.append(call)
                if chunk.done:
                    done = chunk
        except Exception as exc:
            err = _translate(sdk, exc)
            if err is exc:
                raise
            raise err from exc
        if done is None:
            raise ProviderError("Ollama stream ended before done", retryable=True)
        content: list[Block] = []
        if text:
            content.append({"type": "text", "text": "".join(text)})
        for call in calls:
            content.append(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}
            )
            yield call
        yield Completed(
            content=content,
            stop_reason="tool_use" if calls else (done.done_reason or "stop"),
            tokens_in=done.prompt_eval_count or 0,
            tokens_out=done.eval_count or 0,
            model=done.model or model,
        )


register("ollama", OllamaSettings, detect=lambda s: reachable(s.url), rank=30)(OllamaProvider)
