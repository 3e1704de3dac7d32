"""Anthropic Messages API through the official SDK: streaming, tools, prompt caching."""

from __future__ import annotations

import json
import os
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
    http_library,
    is_transport_error,
    parse_retry_after,
    run_canned,
)
from anima.llm.registry import register

CACHE = {"type": "ephemeral"}


def _blocks(content: list[Block]) -> list[Block]:
    out: list[Block] = []
    for b in content:
        if b["type"] == "text":
            out.append({"type": "text", "text": b["text"]})
        elif b["type"] == "tool_use":
            out.append({"type": "tool_use", "id": b["id"], "name": b["name"], "input": b["input"]})
        elif b["type"] == "tool_result":
            out.append(
                {
                    "type": "tool_result",
                    "tool_use_id": b["tool_use_id"],
                    "content": b["content"],
                    "is_error": bool(b.get("is_error")),
                }
            )
    return out


@dataclass(frozen=True)
class AnthropicSettings:
    """`[providers.anthropic]` (or any `[providers.NAME] kind = "anthropic"`)."""

    base_url: str = ""
    """Empty: the SDK default (a proxy or gateway otherwise)."""
    api_key_env: str = "ANTHROPIC_API_KEY"
    """The environment variable holding the key; the key itself is never stored."""


def _has_key(settings: AnthropicSettings) -> bool:
    return bool(os.environ.get(settings.api_key_env))


class AnthropicProvider:
    name = "anthropic"
    default_model = "claude-sonnet-5-5"

    def __init__(self, name: str, settings: AnthropicSettings, timeout: float):
        import anthropic  # lazy: ~1.5 s of imports

        self.name = name
        self._sdk = anthropic
        if not settings.api_key_env:  # a named endpoint is sent only the key it names
            raise ProviderError(
                f"[providers.{name}] names no api_key_env: add the variable holding its key"
            )
        key = os.environ.get(settings.api_key_env)
        if not key:
            raise ProviderError(
                f"no Anthropic API key: set {settings.api_key_env} in the environment"
            )
        self._client = anthropic.Anthropic(
            api_key=key,
            base_url=settings.base_url or None,
            max_retries=0,  # Anima retries itself, uniformly across providers
            timeout=timeout,
        )

    def _params(self, req: ChatRequest) -> dict[str, Any]:
        system: list[dict[str, Any]] = [{"type": "text", "text": s} for s in req.system if s]
        if system:
            system[-1]["cache_control"] = CACHE  # the stable prefix: persona, always, memory
        tools: list[dict[str, Any]] = [
            {"name": t.name, "description": t.description, "input_schema": t.schema}
            for t in req.tools
        ]
        if tools:
            tools[-1]["cache_control"] = CACHE
        params: dict[str, Any] = {
            "model": req.model or self.default_model,
            "max_tokens": req.max_tokens,
            "messages": [
                {"role": m["role"], "content": _blocks(m["content"])} for m in req.messages
            ],
        }
        if system:
            params["system"] = system
        if tools:
            params["tools"] = tools
        if req.temperature is not None:
            params["temperature"] = req.temperature
        return params

    def warm(self) -> None:
        """Run one canned stream through the SDK, no network: its first real call would
        otherwise spend ~30 ms building pydantic schemas for the stream's event types."""
        http = http_library(self._client._client)
        client = self._sdk.Anthropic(
            api_key="warm-up",
            base_url="http://warm-up.invalid",
            max_retries=0,
            http_client=http.Client(transport=_warm_stream(http)),
        )
        twin = object.__new__(AnthropicProvider)
        twin.__dict__.update(self.__dict__, _client=client)
        run_canned(twin)

    def stream(self, request: ChatRequest) -> Iterator[Event]:
        sdk = self._sdk
        try:
            with self._client.messages.stream(**self._params(request)) as stream:
                for event in stream:
                    if event.type == "content_block_delta" and event.delta.type == "text_delta":
                        yield TextDelta(event.delta.text)
                final = stream.get_final_message()
        except sdk.APIStatusError as exc:
            status = exc.status_code
            raise provider_error(
                f"Anthropic API error {status}: {exc.message}",
                retryable=status in (408, 409, 429) or status >= 500,
                retry_after=parse_retry_after(exc.response.headers.get("retry-after")),
            ) from exc
        except sdk.APIError as exc:  # connection errors, timeouts, a stream cut short
            raise ProviderError(f"Anthropic API unreachable: {exc}", retryable=True) from exc
        except Exception as exc:
            if not is_transport_error(exc):
                raise
            raise ProviderError(f"Anthropic stream broke off: {exc}", retryable=True) from exc
        content: list[Block] = []
        for block in final.content:
            if block.type == "text":
                content.append({"type": "text", "text": block.text})
            elif block.type == "tool_use":
                args = dict(block.input) if isinstance(block.input, dict) else {}
                content.append(
                    {"type": "tool_use", "id": block.id, "name": block.name, "input": args}
                )
                yield ToolCall(block.id, block.name, args)
        yield Completed(
            content=content,
            stop_reason=final.stop_reason or "end_turn",
            tokens_in=final.usage.input_tokens,
            tokens_out=final.usage.output_tokens,
            model=final.model,
        )


def _warm_stream(http: Any) -> Any:
    """A canned Messages stream (text and a tool call) for AnthropicProvider.warm, as a
    transport of the SDK's own HTTP library (`http`: httpx, or httpx2 in newer releases)."""
    message: dict[str, Any] = {"id": "msg_warm", "type": "message", "role": "assistant"}
    message |= {"model": "warm-up"}
    message |= {"content": [], "stop_reason": None, "stop_sequence": None}
    message |= {"usage": {"input_tokens": 1, "output_tokens": 0}}
    text = {"type": "text", "text": ""}
    tool = {"type": "tool_use", "id": "toolu_warm", "name": "warm", "input": {}}
    text_delta = {"type": "text_delta", "text": "ok"}
    json_delta = {"type": "input_json_delta", "partial_json": "{}"}
    end = {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 1}}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": message},
        {"type": "content_block_start", "index": 0, "content_block": text},
        {"type": "content_block_delta", "index": 0, "delta": text_delta},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": tool},
        {"type": "content_block_delta", "index": 1, "delta": json_delta},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", **end},
        {"type": "message_stop"},
    ]
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
    headers = {"content-type": "text/event-stream"}
    return http.MockTransport(lambda _request: http.Response(200, headers=headers, content=body))


register("anthropic", AnthropicSettings, detect=_has_key, rank=10)(AnthropicProvider)
