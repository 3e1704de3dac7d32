"""Setting the endpoint and model an agent's turns use: `provider` and `model` in its agent.toml,
edited in place so a person's comments and layout survive, and committed as a hand edit."""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass
from typing import Any

from anima.agent import Agent, save_hand_edit
from anima.errors import BadConfig


@dataclass(frozen=True)
class ModelChange:
    provider: str
    model: str
    commit: str | None
    """The commit's sha, or None when agent.toml already said so."""
    key_env: str = ""
    """The variable the endpoint reads its key from, when it is not set here."""


def set_model(agent: Agent, entry: str) -> ModelChange:
    """Point `agent` at `entry`: an endpoint name (a built-in kind, a `[providers.NAME]` table,
    or auto), optionally `/MODEL`; MODEL may hold slashes. An endpoint alone clears the model.
    Raises BadConfig, changing nothing, for an unknown endpoint or an agent.toml it cannot edit."""
    from anima.llm import registry

    provider, model = registry.split(entry.strip())
    if not provider:
        raise BadConfig(f"give an endpoint, as PROVIDER or PROVIDER/MODEL, not {entry!r}")
    key_env = ""
    if provider != "auto":
        endpoint = registry.endpoint(provider, agent.home.config().providers)
        key_env = getattr(endpoint.settings, "api_key_env", "")
    path = agent.path / "agent.toml"
    text = path.read_text(encoding="utf-8")
    sha = save_hand_edit(
        agent,
        "config",
        set_top_level(text, {"provider": provider, "model": model}),
        subject=f"edit: agent.toml: model {provider}/{model or 'default'} (anima model)",
    )
    missing = key_env if key_env and not os.environ.get(key_env) else ""
    return ModelChange(provider, model, sha, missing)


def _toml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string; checked below


def _key_line(key: str) -> re.Pattern[str]:
    """`key = "string"` with an optional comment, as one line."""
    value = r"\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*'"
    return re.compile(
        rf"^(?P<head>[ \t]*(?:{key}|\"{key}\")[ \t]*=[ \t]*)(?:{value})(?P<rest>[ \t]*(?:#.*)?)$"
    )


def set_top_level(text: str, values: dict[str, str]) -> str:
    """`text` (a TOML document) with top-level string keys set, every other line untouched. A
    missing key is added after the previous one set (or before the first key or table); an empty
    value for a missing key adds nothing. Raises BadConfig rather than guess at a layout it does
    not understand (the result must parse to exactly the intended change)."""
    try:
        before = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadConfig(f"agent.toml does not parse: {exc}") from None
    lines = text.splitlines(keepends=True)
    end = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), len(lines))
    first = next(
        (
            i
            for i, line in enumerate(lines[:end])
            if line.strip() and not line.lstrip().startswith("#")
        ),
        end,
    )
    anchor = None
    for key, value in values.items():
        pattern = _key_line(re.escape(key))
        for i in range(end):
            body = lines[i].rstrip("\r\n")
            match = pattern.match(body)
            if match:
                newline = lines[i][len(body) :]
                lines[i] = match["head"] + _toml_string(value) + match["rest"] + newline
                anchor = i
                break
        else:
            if key in before:
                raise BadConfig(_unsure(key, value))
            if not value:
                continue
            at = first if anchor is None else anchor + 1
            if at > 0 and not lines[at - 1].endswith("\n"):
                lines[at - 1] += "\n"
            lines.insert(at, f"{key} = {_toml_string(value)}\n")
            end += 1
            anchor = at
    result = "".join(lines)
    expected: dict[str, Any] = dict(before)
    for key, value in values.items():
        if value or key in before:
            expected[key] = value
    try:
        if tomllib.loads(result) == expected:
            return result
    except tomllib.TOMLDecodeError:
        pass
    raise BadConfig(_unsure(next(iter(values)), next(iter(values.values()))))


def _unsure(key: str, value: str) -> str:
    return (
        f"agent.toml sets {key} in a way this command does not edit safely; set "
        f"{key} = {_toml_string(value)} by hand: anima edit NAME config"
    )
