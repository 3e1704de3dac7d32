"""OpenAI-compatible Chat Completions through the official `openai` SDK: streaming, tool calls.

One provider kind, many named endpoints: OpenAI itself, OpenRouter, Groq, vLLM, llama.cpp's
server, LM Studio and anything else that speaks Chat Completions, each a `[providers.NAME]`
table with `kind = "openai"`, its `base_url` and the variable holding its key.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
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

INVALID_ARGUMENTS = "invalid_json_arguments"
"""The one key of a tool call's input when the model's arguments were not a JSON object: the
raw text is kept (in history, and for the model to see what it sent) and a built-in tool
refuses the unknown argument, so the model is told and tries again."""

SAFE_ID = re.compile(r"[a-zA-Z0-9_-]{1,40}")  # used with fullmatch
"""Tool-call ids both APIs accept: Anthropic wants ^[a-zA-Z0-9_-]+$, OpenAI at most 40 chars."""

NO_NAME = "unnamed_tool"
"""A call that arrived without a name gets this one: no tool has it, so the model is told,
and history stays valid (both APIs refuse a call with no name)."""

BAD_NAME = "invalid_tool_name"
"""A call whose name no provider accepts (a hostile or broken server: newlines, 10 kB of text)
gets this one instead: the model is told no such tool exists, and the name never reaches
history, the commit body or the next request (where the API would refuse it every time)."""

TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # used with fullmatch
"""Tool names both APIs accept."""

MAX_CALLS = 128
"""Tool calls one answer may ask for; a server asking for more is broken (or hostile)."""

CHARS_PER_TOKEN = 32
SLACK_CHARS = 64 * 1024
"""A stream may carry at most max_tokens * CHARS_PER_TOKEN + SLACK_CHARS characters of text,
tool names and arguments: a server that ignores max_tokens cannot fill memory or history."""

CHUNKS_PER_TOKEN = 16  # a server may stream a character per chunk
SLACK_CHUNKS = 1000
DEADLINE_FACTOR = 10
"""A stream must end within DEADLINE_FACTOR times the provider's timeout (which bounds each
read only): a server trickling empty chunks for ever cannot hold the agent's turn (and its
lock) for ever."""

NO_KEY = "anima-no-key"
"""Sent when `api_key_env` is empty: local servers need no key, but the SDK insists on one."""

MAX_DETAIL = 500
"""Characters of a server's error message kept in the error (and the turn's record)."""

STOP_REASONS = {
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "stop": "end_turn",
    "length": "max_tokens",
}
"""Chat Completions finish reasons → the neutral (Anthropic) stop reasons history records."""


@dataclass(frozen=True)
class OpenAISettings:
    """A `[providers.NAME]` table of kind "openai" (the registry takes `kind` and `model`)."""

    base_url: str = ""
    """Empty: the SDK's default (api.openai.com, or $OPENAI_BASE_URL). A local server's is
    e.g. http://127.0.0.1:8080/v1 (llama.cpp), :1234/v1 (LM Studio), :8000/v1 (vLLM)."""
    api_key_env: str = "OPENAI_API_KEY"
    """The environment variable holding the key; empty for servers that need none."""


def wire_id(raw: str) -> str:
    """A tool-call id as sent to a Chat Completions server: ids from elsewhere that it might
    refuse are replaced by a stable stand-in, the same for a call and its result."""
    if SAFE_ID.fullmatch(raw):
        return raw
    return "call_" + hashlib.sha256(raw.encode()).hexdigest()[:24]


def _result_text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return str(content)


def to_openai_messages(req: ChatRequest) -> list[dict[str, Any]]:
    """Neutral blocks → Chat Completions messages: the system segments as one system message;
    an assistant's text and tool_use blocks as one message with `tool_calls`; tool_result
    blocks as role=tool messages, in order, before the user text of the same message."""
    out: list[dict[str, Any]] = []
    if any(req.system):
        out.append({"role": "system", "content": "\n\n".join(s for s in req.system if s)})
    for m in req.messages:
        texts = [b["text"] for b in m["content"] if b["type"] == "text"]
        if m["role"] == "assistant":
            calls = [b for b in m["content"] if b["type"] == "tool_use"]
            msg: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts)}
            if calls:
                msg["content"] = msg["content"] or None
                msg["tool_calls"] = [
                    {
                        "id": wire_id(c["id"]),
                        "type": "function",
                        "function": {"name": c["name"], "arguments": json.dumps(c["input"])},
                    }
                    for c in calls
                ]
            out.append(msg)
            continue
        for b in m["content"]:
            if b["type"] == "tool_result":
                error = "ERROR: " if b.get("is_error") else ""
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": wire_id(b["tool_use_id"]),
                        "content": error + _result_text(b["content"]),
                    }
                )
        if texts:
            out.append({"role": "user", "content": "\n\n".join(texts)})
    return out


def parse_arguments(raw: str) -> dict[str, Any]:
    """A call's streamed arguments as its input: {} for none, else a JSON object; anything
    else is kept under INVALID_ARGUMENTS rather than dropped or allowed to break history."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested 100,000 deep
        value = None
    return value if isinstance(value, dict) else {INVALID_ARGUMENTS: raw}


@dataclass
class _PartialCall:
    """One tool call being assembled from streamed deltas."""

    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class _Assembly:
    """Tool calls being assembled from streamed deltas. A delta names its call by `index`, as
    the API says; servers differ, so a delta with a new id starts a new call even at an index in
    use, and one with no index continues the last call unless its id is new."""

    calls: list[_PartialCall] = field(default_factory=list)
    feeding: dict[int, int] = field(default_factory=dict)
    """A delta index → the position of the call it currently feeds."""

    def add(self, delta: Any) -> None:
        index = delta.index
        at = self.feeding.get(index) if index is not None else len(self.calls) - 1
        known = self.calls[at] if at is not None and at >= 0 else None
        if known is None or (delta.id and known.id and delta.id != known.id):
            known = _PartialCall()
            self.calls.append(known)
            if index is not None:
                self.feeding[index] = len(self.calls) - 1
        known.id = _text(delta.id, "a tool call's id") or known.id
        if delta.function is not None:
            known.name += _text(delta.function.name, "a tool call's name")
            known.arguments.append(_text(delta.function.arguments, "a tool call's arguments"))


def _used_ids(req: ChatRequest) -> set[str]:
    return {b["id"] for m in req.messages for b in m["content"] if b.get("type") == "tool_use"}


def finish_calls(partials: list[_PartialCall], used: set[str]) -> list[ToolCall]:
    """The assembled calls, each with an id that is valid for both APIs and unique in the
    conversation (some servers send none, odd ones, or the same one every time), and a name."""
    calls = []
    for p in partials:
        call_id = p.id
        if not SAFE_ID.fullmatch(call_id) or call_id in used:
            call_id = f"call_{secrets.token_hex(12)}"
        used.add(call_id)
        name = p.name or NO_NAME
        if not TOOL_NAME.fullmatch(name):
            name = BAD_NAME
        calls.append(ToolCall(call_id, name, parse_arguments("".join(p.arguments))))
    return calls


class _Malformed(Exception):
    """What a server sent is not a Chat Completions stream Anima can use."""


def _text(value: Any, what: str) -> str:
    """`value` if it is a string ("" for None); _Malformed for anything else (a number, a list:
    the SDK does not check the types of what a server streams)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Malformed(f"{what} is not a string but {type(value).__name__}")
    return value


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


class _Received:
    """What a stream has brought so far, within bounds: a server that ignores max_tokens, asks
    for endless tool calls or never finishes is a ProviderError, not a turn held for ever."""

    def __init__(self, name: str, max_tokens: int, seconds: float):
        self.name, self.seconds = name, seconds
        self.text: list[str] = []
        self.assembly = _Assembly()
        self.usage: Any = None
        self.finish: str | None = None
        self.model = ""
        self.max_chars = max(max_tokens, 1) * CHARS_PER_TOKEN + SLACK_CHARS
        self.max_chunks = max(max_tokens, 1) * CHUNKS_PER_TOKEN + SLACK_CHUNKS
        self.deadline = time.monotonic() + seconds
        self.chars = self.chunks = 0

    def feed(self, chunk: Any) -> list[str]:
        """Take one chunk; its text, to stream on."""
        self.chunks += 1
        if self.chunks > self.max_chunks:
            raise ProviderError(f"{self.name}: the answer never ends ({self.chunks} chunks)")
        if time.monotonic() > self.deadline:
            raise ProviderError(f"{self.name}: the answer never ends (over {self.seconds:g}s)")
        self.model = _text(chunk.model, "the model's name") or self.model
        self.usage = chunk.usage or self.usage
        out = []
        for choice in chunk.choices or ():
            delta = choice.delta
            if delta is None:
                continue
            content = _text(delta.content, "the text")
            if content:
                out.append(content)
                self.chars += len(content)
            for tc in delta.tool_calls or ():
                self.assembly.add(tc)
                if tc.function is not None:
                    self.chars += len(tc.function.name or "") + len(tc.function.arguments or "")
            self.finish = _text(choice.finish_reason, "the finish reason") or self.finish
        self.text += out
        if len(self.assembly.calls) > MAX_CALLS:
            raise ProviderError(f"{self.name}: asked for more than {MAX_CALLS} tool calls at once")
        if self.chars > self.max_chars:
            raise ProviderError(
                f"{self.name}: the answer is longer than {self.max_chars} characters "
                "(max_tokens ignored?)"
            )
        return out


class OpenAIProvider:
    default_model = "gpt-5-mini"

    def __init__(self, name: str, settings: OpenAISettings, timeout: float):
        import openai  # lazy: ~0.7 s of imports

        self.name = name
        self._sdk = openai
        self._settings = settings
        self._timeout = timeout
        key = NO_KEY
        if settings.api_key_env:
            key = os.environ.get(settings.api_key_env, "")
            if not key:
                raise ProviderError(
                    f"no API key for provider {name!r}: set {settings.api_key_env} in the "
                    'environment (or api_key_env = "" for a server that needs no key)'
                )
        self._key = key if settings.api_key_env and len(key) >= 8 else ""
        self._client = openai.OpenAI(
            api_key=key,
            base_url=settings.base_url or None,
            max_retries=0,  # Anima retries itself, uniformly across providers
            timeout=timeout,
        )

    def _params(self, req: ChatRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": req.model or self.default_model,
            "messages": to_openai_messages(req),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        # OpenAI's newer models refuse max_tokens; other servers may know only max_tokens.
        limit = "max_tokens" if self._settings.base_url else "max_completion_tokens"
        params[limit] = req.max_tokens
        if req.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.schema,
                    },
                }
                for t in req.tools
            ]
        if req.temperature is not None:
            params["temperature"] = req.temperature
        return params

    def _said(self, exc: Any) -> str:
        """What the server said in an error, without our key: proxies echo the key they were
        sent ("invalid key sk-..."), and errors go to the log and the message's failure notes."""
        return _detail(exc, {self._settings.api_key_env: self._key} if self._key else {})

    def _error(self, exc: Exception) -> Exception:
        """SDK and transport errors → ProviderError (ContextOverflow when the prompt was too
        long); anything else is a bug and is returned unchanged, to be re-raised."""
        sdk = self._sdk
        if isinstance(exc, sdk.APIStatusError):
            status = exc.status_code
            detail = self._said(exc)
            if status in (401, 403) and self._settings.api_key_env:
                detail += f"; check {self._settings.api_key_env}"
            return provider_error(
                f"{self.name}: API error {status}: {detail}",
                retryable=status in (408, 409, 429) or status >= 500,
                retry_after=parse_retry_after(exc.response.headers.get("retry-after")),
            )
        if isinstance(exc, sdk.APIConnectionError):  # timeouts too
            where = self._settings.base_url or "https://api.openai.com/v1"
            return ProviderError(f"{self.name}: API unreachable at {where}: {exc}", retryable=True)
        if isinstance(exc, sdk.APIError):  # an error event mid-stream (a failed upstream)
            return provider_error(
                f"{self.name}: error mid-stream: {self._said(exc)}", retryable=True
            )
        if is_transport_error(exc):
            return ProviderError(f"{self.name}: stream broke off: {exc}", retryable=True)
        return exc

    def stream(self, request: ChatRequest) -> Iterator[Event]:
        params = self._params(request)
        got = _Received(self.name, request.max_tokens, self._timeout * DEADLINE_FACTOR)
        try:
            with self._client.chat.completions.create(**params) as chunks:
                for chunk in chunks:
                    yield from (TextDelta(t) for t in got.feed(chunk))
        except ProviderError:
            raise
        except _Malformed as exc:
            raise ProviderError(f"{self.name}: malformed stream: {exc}", retryable=True) from exc
        except Exception as exc:
            err = self._error(exc)
            if err is not exc:
                raise err from exc
            if isinstance(exc, ValueError | TypeError | AttributeError | KeyError | RecursionError):
                # what the server sent broke the SDK's parsing (or ours): the server's fault
                detail = f"{type(exc).__name__}: {str(exc)[:MAX_DETAIL]}"
                raise ProviderError(
                    f"{self.name}: malformed stream: {detail}", retryable=True
                ) from exc
            raise
        if got.finish is None:
            raise ProviderError(f"{self.name}: stream ended before it finished", retryable=True)
        calls = finish_calls(got.assembly.calls, _used_ids(request))
        content: list[Block] = [{"type": "text", "text": "".join(got.text)}] if got.text else []
        for call in calls:
            content.append(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}
            )
            yield call
        yield Completed(
            content=content,
            stop_reason="tool_use" if calls else STOP_REASONS.get(got.finish, got.finish),
            tokens_in=_count(getattr(got.usage, "prompt_tokens", 0)),
            tokens_out=_count(getattr(got.usage, "completion_tokens", 0)),
            model=got.model or request.model,
        )

    def warm(self) -> None:
        """Run one canned stream through the SDK, no network, so the first real call does not
        pay for building the SDK's response types."""
        http = http_library(self._client._client)
        twin = copy.copy(self)
        twin._client = self._sdk.OpenAI(
            api_key="warm-up",
            base_url="http://warm-up.invalid/v1",
            max_retries=0,
            http_client=http.Client(transport=_warm_stream(http)),
        )
        run_canned(twin)


def _detail(exc: Any, secrets: dict[str, str] | None = None) -> str:
    """An SDK error's message and code, `secrets` redacted, cut short: a proxy may answer with
    a whole HTML page."""
    body = exc.body if isinstance(exc.body, dict) else {}
    detail = str(body.get("message") or exc.message)
    if exc.code:
        detail += f" ({str(exc.code)[:100]})"
    for env, value in (secrets or {}).items():  # before the cut, which could halve a key
        detail = detail.replace(value, f"[redacted: {env}]")
    if len(detail) > MAX_DETAIL:
        detail = detail[:MAX_DETAIL] + f"… [{len(detail)} characters]"
    return detail


def _warm_stream(http: Any) -> Any:
    """A canned Chat Completions stream (text, a tool call, usage) for OpenAIProvider.warm, as
    a transport of the SDK's own HTTP library."""
    head = {"id": "chatcmpl-warm", "object": "chat.completion.chunk", "created": 0}
    head |= {"model": "warm-up"}
    call = {"index": 0, "id": "call_warm", "type": "function"}
    call |= {"function": {"name": "warm", "arguments": "{}"}}
    deltas: list[tuple[dict[str, Any], str | None]] = [
        ({"role": "assistant", "content": "ok"}, None),
        ({"tool_calls": [call]}, None),
        ({}, "tool_calls"),
    ]
    chunks = [
        {**head, "choices": [{"index": 0, "delta": d, "finish_reason": f}]} for d, f in deltas
    ]
    chunks.append({**head, "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    headers = {"content-type": "text/event-stream"}
    return http.MockTransport(lambda _request: http.Response(200, headers=headers, content=body))


def _key_is_set(settings: OpenAISettings) -> bool:
    """`auto` picks OpenAI when its key is set (a keyless endpoint is never guessed)."""
    return bool(settings.api_key_env and os.environ.get(settings.api_key_env))


register("openai", OpenAISettings, detect=_key_is_set, rank=20)(OpenAIProvider)
