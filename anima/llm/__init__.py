"""Model providers behind one protocol: anthropic, ollama and the embedded offline model."""

from __future__ import annotations

from anima.llm.base import (
    ChatRequest,
    Completed,
    Event,
    Provider,
    Retrying,
    TextDelta,
    ToolCall,
    ToolSpec,
)
from anima.llm.registry import choose, get_provider, provider_names, register

__all__ = [
    "ChatRequest",
    "Completed",
    "Event",
    "Provider",
    "Retrying",
    "TextDelta",
    "ToolCall",
    "ToolSpec",
    "choose",
    "get_provider",
    "provider_names",
    "register",
]
