"""Errors a user can cause. The CLI turns each into one red line and a non-zero exit."""

from __future__ import annotations


class AnimaError(Exception):
    """Base of every error that carries a message a person can act on."""


class HomeNotFound(AnimaError):
    """ANIMA_HOME has not been initialised."""


class AgentNotFound(AnimaError):
    """No agent directory by that name."""


class AgentExists(AnimaError):
    """An agent by that name already exists."""


class BadName(AnimaError):
    """An agent or file name that is unsafe or malformed."""


class BadConfig(AnimaError):
    """agent.toml or anima.toml is invalid."""


class BadMessage(AnimaError):
    """A message file that cannot be accepted (moved to inbox/rejected/)."""


class ProviderError(AnimaError):
    """A model provider failed; the turn is abandoned and its messages stay pending."""

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class ContextOverflow(ProviderError):
    """The prompt did not fit the model's context window: compact the conversation and retry."""


OVERFLOW_HINTS = (
    "prompt is too long",
    "context length",
    "context window",
    "maximum context",
    "too many tokens",
    "context_length_exceeded",  # OpenAI's error code (Groq and others send it too)
    "exceed_context_size",  # llama.cpp server's error type
    "exceeds the available context size",  # llama.cpp server's message
)


def provider_error(
    message: str, *, retryable: bool, retry_after: float | None = None
) -> ProviderError:
    """A ProviderError, or ContextOverflow when the provider says the prompt was too long."""
    if any(h in message.lower() for h in OVERFLOW_HINTS):
        return ContextOverflow(message)
    return ProviderError(message, retryable=retryable, retry_after=retry_after)


class ToolError(AnimaError):
    """A tool refused or failed; returned to the model as an error tool result."""


class Busy(AnimaError):
    """Another process holds a lock that this operation needs."""


class ServiceUnavailable(AnimaError):
    """A channel adapter cannot reach its service; it exits non-zero so systemd restarts it."""


class BadFrontMatter(AnimaError):
    """YAML front matter that cannot be read safely: not YAML, tags, aliases, too big or deep,
    non-text keys, impossible dates."""


class UnfinishedMessage(BadMessage):
    """A message file whose front matter is opened but never closed: still being written in
    place (left for a later scan while it is young), else broken (rejected)."""


class BadSkill(AnimaError):
    """No skill by that name, or one that is invalid (the reason says why)."""


class BadProposal(AnimaError):
    """A proposal that cannot be made or decided: a path or key outside the whitelist, no such
    proposal, failing checks without --force, or main changed the same file meanwhile."""


class BadSource(AnimaError):
    """A git URL, agent template, skill repository or marketplace index that cannot be used: a
    hostile URL or tree, a missing file, a fetch that failed."""


class NeedsConsent(AnimaError):
    """A skill carrying scripts was not confirmed (re-run with --yes)."""


class UpdateConflict(AnimaError):
    """An agent's own changes conflict with its template's update; the merge was aborted."""
