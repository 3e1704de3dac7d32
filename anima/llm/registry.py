"""Provider kinds and named endpoints, chosen through a registry, never an if/elif on names.

A *kind* is a provider module (anthropic, openai, ollama, offline) with its own settings
dataclass. An *endpoint* is a named use of a kind: each kind is an endpoint of its own name, and
`[providers.NAME]` tables in anima.toml add more (`kind = "openai"`, `base_url`, `api_key_env`,
`model`) or adjust a built-in one (`[providers.anthropic] base_url = ...`). Agents name endpoints
in `provider`, `fallback` and `anima model`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from anima.config import AgentConfig, GlobalConfig, ProviderSettings, build
from anima.errors import BadConfig
from anima.llm.base import Provider

Factory = Callable[[str, Any, float], Provider]
"""(endpoint name, the kind's settings, timeout in seconds) → a provider client."""


@dataclass(frozen=True)
class Kind:
    name: str
    settings: type
    """A frozen dataclass: the keys a `[providers.NAME]` table of this kind accepts."""
    factory: Factory
    detect: Callable[[Any], bool] | None
    """For `auto`: is this kind usable here with these settings (a key set, a server up)?"""
    rank: int
    """`auto` asks kinds in this order (lowest first)."""


@dataclass(frozen=True)
class Endpoint:
    name: str
    kind: Kind
    settings: Any
    model: str = ""
    """The endpoint's default model; empty: the provider's own default."""


_KINDS: dict[str, Kind] = {}


def register(
    kind: str,
    settings: type,
    *,
    detect: Callable[[Any], bool] | None = None,
    rank: int = 50,
) -> Callable[[Factory], Factory]:
    """Register a provider kind: its settings dataclass and how to build a client."""

    def deco(factory: Factory) -> Factory:
        _KINDS[kind] = Kind(kind, settings, factory, detect, rank)
        return factory

    return deco


def _load_builtins() -> None:
    # Imported lazily: the SDKs cost ~1.5 s of imports (DESIGN §8), so each provider module
    # imports its SDK only when a client is built.
    from anima.llm import anthropic_provider, offline, ollama_provider  # noqa: F401

    try:
        from anima.llm import openai_provider  # noqa: F401
    except ImportError:  # pragma: no cover - the module is part of anima; the SDK is lazy
        pass


def kinds() -> dict[str, Kind]:
    _load_builtins()
    return dict(_KINDS)


_LEGACY = {
    "anthropic_base_url": ("anthropic", "base_url"),
    "anthropic_api_key_env": ("anthropic", "api_key_env"),
    "ollama_host": ("ollama", "host"),
}
"""Flat `[providers]` keys of earlier releases, still read: key → (endpoint, its setting)."""


def endpoints(settings: ProviderSettings) -> dict[str, Endpoint]:
    """Every endpoint by name: one per kind, then the `[providers.NAME]` tables."""
    known = kinds()
    tables: dict[str, dict[str, Any]] = {name: {} for name in known}
    for key, (name, field) in _LEGACY.items():
        value = getattr(settings, key)
        if value:
            tables[name][field] = value
    for name, table in settings.endpoints.items():
        tables[name] = {**tables.get(name, {}), **table}
    return _resolve(json.dumps(tables, sort_keys=True, default=str))  # a hashable cache key


@functools.lru_cache(maxsize=32)
def _resolve(tables_json: str) -> dict[str, Endpoint]:
    out: dict[str, Endpoint] = {}
    for name, table in json.loads(tables_json).items():
        where = f"providers.{name}"
        if not isinstance(table, dict):
            raise BadConfig(f"{where} must be a table")
        data = dict(table)
        kind_name = data.pop("kind", name)
        if kind_name not in _KINDS:
            choices = ", ".join(sorted(_KINDS))
            if "kind" not in table:
                raise BadConfig(f"{where}: set kind = one of {choices}")
            raise BadConfig(f"{where}: unknown kind {kind_name!r}; choose one of {choices}")
        model = data.pop("model", "")
        if not isinstance(model, str):
            raise BadConfig(f"{where}.model must be text, not {model!r}")
        kind = _KINDS[kind_name]
        if name != kind_name and "api_key_env" in _field_set(kind.settings):
            data.setdefault("api_key_env", "")  # never send a kind's default key elsewhere
        out[name] = Endpoint(name, kind, build(kind.settings, data, where), model)
    return out


def provider_names() -> list[str]:
    return sorted(kinds())


def endpoint(name: str, settings: ProviderSettings) -> Endpoint:
    found = endpoints(settings)
    if name not in found:
        raise BadConfig(
            f"unknown provider {name!r}; choose one of: auto, {', '.join(sorted(found))} "
            "(or add a [providers.NAME] table to anima.toml)"
        )
    return found[name]


def get_provider(name: str, settings: ProviderSettings) -> Provider:
    """A provider client for endpoint `name`, reused across turns (SDK clients keep their HTTP
    connections). A changed key in the environment builds a new client."""
    ep = endpoint(name, settings)
    key_env = getattr(ep.settings, "api_key_env", "")
    key = os.environ.get(key_env, "") if key_env else ""
    return _client(ep.name, ep.kind.name, ep.settings, settings.timeout, key)


@functools.lru_cache(maxsize=16)
def _client(name: str, kind: str, settings: Any, timeout: float, _key: str) -> Provider:
    return _KINDS[kind].factory(name, settings, timeout)


def default_model(name: str, settings: ProviderSettings) -> str:
    """The model a turn on endpoint `name` uses when the agent names none."""
    ep = endpoint(name, settings)
    if ep.model:
        return ep.model
    return str(getattr(ep.kind.factory, "default_model", ""))


def secret_envs(settings: ProviderSettings) -> set[str]:
    """The environment variables holding provider keys (for redaction)."""
    names = set()
    for ep in endpoints(settings).values():
        env = getattr(ep.settings, "api_key_env", "")
        if env:
            names.add(env)
    return names


def warm_up(agent: AgentConfig, global_: GlobalConfig) -> str:
    """Build the first provider of an agent's chain ahead of its first message (importing an
    SDK takes over a second). Returns its name."""
    name, _ = choose(agent, global_)[0]
    provider = get_provider(name, global_.providers)
    warm = getattr(provider, "warm", None)  # a provider may run its first-call work now
    if warm is not None:
        warm()
    return name


def detect(settings: ProviderSettings) -> str:
    """`auto`: ask each kind's own endpoint, in rank order (Anthropic with a key, an OpenAI key,
    a reachable Ollama); the offline model when none answers."""
    found = endpoints(settings)
    ranked = sorted((k for k in _KINDS.values() if k.detect), key=lambda k: k.rank)
    for kind in ranked:
        ep = found[kind.name]
        if ep.kind is kind and kind.detect is not None and kind.detect(ep.settings):
            return kind.name
    return "offline"


def split(entry: str) -> tuple[str, str]:
    """`NAME` or `NAME/MODEL` (a model may hold slashes: openrouter/meta-llama/llama-3)."""
    name, _, model = entry.partition("/")
    return name, model


def choose(agent: AgentConfig, global_: GlobalConfig) -> list[tuple[str, str]]:
    """The (endpoint, model) chain for a turn: the chosen one, then the fallback list."""
    primary = agent.provider if agent.provider != "auto" else global_.provider
    if primary == "auto":
        primary = detect(global_.providers)
    model = agent.model or (global_.model if primary == global_.provider else "")
    chain = [(primary, model)]
    for entry in agent.fallback or global_.fallback:
        name, fb_model = split(entry)
        if name == "auto":
            name = detect(global_.providers)
        if (name, fb_model) not in chain and not (not fb_model and name in (n for n, _ in chain)):
            chain.append((name, fb_model))
    return [(name, model or _endpoint_model(name, global_.providers)) for name, model in chain]


def _field_set(settings: type) -> set[str]:
    return {f.name for f in dataclasses.fields(settings)}


def _endpoint_model(name: str, settings: ProviderSettings) -> str:
    """A named endpoint's own `model`; unknown names are reported when the turn builds them."""
    found = endpoints(settings).get(name)
    return found.model if found else ""


def field_names(kind: str) -> list[str]:
    """The keys a `[providers.NAME]` table of `kind` accepts (for error messages and docs)."""
    return ["kind", "model", *(f.name for f in dataclasses.fields(_KINDS[kind].settings))]
