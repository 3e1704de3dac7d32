"""Providers are chosen through a registry, never an if/elif chain on names."""

from __future__ import annotations

import functools
import os
import urllib.request
from collections.abc import Callable

from anima.config import AgentConfig, GlobalConfig, ProviderSettings
from anima.errors import BadConfig
from anima.llm.base import Provider

Factory = Callable[[ProviderSettings], Provider]
_FACTORIES: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    def deco(factory: Factory) -> Factory:
        _FACTORIES[name] = factory
        return factory

    return deco


def _load_builtins() -> None:
    # Imported lazily: the SDKs cost ~1.5 s of imports (DESIGN §8), so each provider module
    # imports its SDK only when the provider is built.
    from anima.llm import anthropic_provider, offline, ollama_provider  # noqa: F401


def provider_names() -> list[str]:
    _load_builtins()
    return sorted(_FACTORIES)


def get_provider(name: str, settings: ProviderSettings) -> Provider:
    """A provider client, reused across turns (SDK clients keep their HTTP connections)."""
    _load_builtins()
    if name not in _FACTORIES:
        raise BadConfig(
            f"unknown provider {name!r}; choose one of: auto, {', '.join(sorted(_FACTORIES))}"
        )
    return _client(name, settings, os.environ.get(settings.anthropic_api_key_env, ""))


@functools.lru_cache(maxsize=16)
def _client(name: str, settings: ProviderSettings, _key: str) -> Provider:
    # The key is part of the cache key, so a changed key builds a new client.
    return _FACTORIES[name](settings)


def warm_up(agent: AgentConfig, global_: GlobalConfig) -> str:
    """Build the first provider of an agent's chain ahead of its first message (importing an
    SDK takes over a second). Returns its name."""
    name, _ = choose(agent, global_)[0]
    provider = get_provider(name, global_.providers)
    warm = getattr(provider, "warm", None)  # a provider may run its first-call work now
    if warm is not None:
        warm()
    return name


def ollama_host(settings: ProviderSettings) -> str:
    return settings.ollama_host or "http://127.0.0.1:11434"


@functools.lru_cache(maxsize=8)
def _ollama_reachable(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"{host.rstrip('/')}/api/tags", timeout=0.5) as resp:
            return bool(resp.status == 200)
    except (OSError, ValueError):
        return False


def detect(settings: ProviderSettings) -> str:
    """`auto`: Anthropic when a key is set, else a reachable Ollama, else the offline model."""
    if os.environ.get(settings.anthropic_api_key_env):
        return "anthropic"
    if _ollama_reachable(ollama_host(settings)):
        return "ollama"
    return "offline"


def choose(agent: AgentConfig, global_: GlobalConfig) -> list[tuple[str, str]]:
    """The (provider, model) chain for a turn: the chosen one, then the fallback list."""
    primary = agent.provider if agent.provider != "auto" else global_.provider
    if primary == "auto":
        primary = detect(global_.providers)
    model = agent.model or (global_.model if primary == global_.provider else "")
    chain = [(primary, model)]
    for name in agent.fallback or global_.fallback:
        if name == "auto":
            name = detect(global_.providers)
        if name not in (n for n, _ in chain):
            chain.append((name, ""))
    return chain
