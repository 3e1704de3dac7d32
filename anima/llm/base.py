"""The Provider protocol and the plain data it speaks.

Content blocks are provider-neutral dicts in the Anthropic shape, which is also what history
stores: {"type": "text", "text"}, {"type": "tool_use", "id", "name", "input"},
{"type": "tool_result", "tool_use_id", "content", "is_error"}.
"""

from __future__ import annotations

import importlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from anima.errors import ProviderError

Block = dict[str, Any]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    schema: dict[str, Any]


@dataclass(frozen=True)
class ChatRequest:
    model: str
    system: list[str]
    """System prompt segments, most stable first (the prefix that prompt caching keeps)."""
    messages: list[dict[str, Any]]
    """[{"role": "user" | "assistant", "content": [Block, ...]}, ...]"""
    tools: list[ToolSpec] = field(default_factory=list)
    max_tokens: int = 1024
    temperature: float | None = None


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class Retrying:
    """A transient failure; partial output of this attempt must be discarded."""

    attempt: int
    delay: float
    reason: str


@dataclass(frozen=True)
class Completed:
    content: list[Block]
    stop_reason: str
    tokens_in: int = 0
    tokens_out: int = 0
    model: str = ""


Event = TextDelta | ToolCall | Retrying | Completed


class Provider(Protocol):
    name: str
    default_model: str

    def stream(self, request: ChatRequest) -> Iterator[Event]:
        """Yield TextDelta/ToolCall events, then exactly one Completed. Raise ProviderError."""
        ...


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None) -> float:
    """Exponential backoff with full jitter; a server's retry-after wins when it asks for longer."""
    delay = random.uniform(0, min(cap, base * (2 ** (attempt - 1))))
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


def stream_with_retries(
    provider: Provider,
    request: ChatRequest,
    *,
    retries: int,
    base: float,
    cap: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Event]:
    """Run one model call, retrying transient failures (429, 5xx, timeouts, cut streams)."""
    attempt = 0
    while True:
        try:
            yield from provider.stream(request)
            return
        except ProviderError as exc:
            attempt += 1
            if not exc.retryable or attempt > retries:
                raise
            delay = backoff_delay(attempt, base, cap, exc.retry_after)
            log.info(
                "%s: %s; retry %d of %d in %.1f s", provider.name, exc, attempt, retries, delay
            )
            yield Retrying(attempt, delay, str(exc))
            sleep(delay)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def http_library(client: Any) -> Any:
    """The HTTP library an SDK's client is built on (its client subclasses httpx's Client, or
    httpx2's in newer releases), for a canned warm-up transport of that same library."""
    mro = type(client).__mro__
    lib = next(c.__module__.split(".")[0] for c in mro if c.__module__.startswith("httpx"))
    return importlib.import_module(lib)


def run_canned(provider: Provider) -> None:
    """Stream one tiny request through `provider` (a twin wired to a canned transport), so the
    SDK builds its response types before the first real call."""
    text = [{"type": "text", "text": "hi"}]
    request = ChatRequest("warm-up", ["warm-up"], [{"role": "user", "content": text}], [], 8)
    for _ in provider.stream(request):
        pass


def is_transport_error(exc: BaseException) -> bool:
    """A broken connection or timeout raised by the HTTP stack under an SDK (httpx, or httpx2
    in newer anthropic releases): mid-stream failures reach us unwrapped."""
    return type(exc).__module__.split(".")[0] in ("httpx", "httpcore", "httpx2", "httpcore2", "h11")
