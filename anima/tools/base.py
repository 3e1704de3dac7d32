"""The Tool protocol, tools built from plain typed functions, and the registry.

A tool's name, description and JSON schema come from its function's signature and docstring.
Errors a model can cause (bad arguments, a refused path) come back to it as an error tool result;
they never end the turn. `run_tool` is the one place tools are dispatched: whatever a tool raises
becomes an error result (a bug is also logged with its traceback), and the values of configured
secrets are redacted from every result before it reaches history or a commit.
"""

from __future__ import annotations

import inspect
import logging
import threading
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from anima.config import AgentConfig
from anima.errors import BadConfig, ToolError
from anima.llm.base import ToolSpec
from anima.message import Message

log = logging.getLogger(__name__)

PROPOSED = "proposed "
"""A reason the propose tool records (its own heading in the commit body, not under Memory)."""
MAX_RESULT_CHARS = 30000
MAX_ERROR_CHARS = 2000


@dataclass
class ToolContext:
    """What a tool may touch during one turn. Tools record effects here; the turn commits them."""

    agent_name: str
    agent_dir: Path
    config: AgentConfig
    known_agents: list[str]
    replying_to: list[Message]
    conversation: str
    outgoing: list[Message] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    cancel: threading.Event | None = None
    """Set when the runtime shuts down: a tool that waits (the shell) stops waiting."""
    memory_written: int = 0
    """Bytes the memory tool wrote this turn (capped by budget.memory_turn_bytes)."""
    _secrets: dict[str, str] | None = field(default=None, repr=False)

    @property
    def workspace(self) -> Path:
        return self.agent_dir / "workspace"

    @property
    def memory_dir(self) -> Path:
        return self.agent_dir / "memory"

    def memory_lines(self) -> list[str]:
        """The commit body's account of memory changes and their reasons (empty if none)."""
        memory = [r for r in self.reasons if not r.startswith(PROPOSED)]
        proposed = [r for r in self.reasons if r.startswith(PROPOSED)]
        out = ["", "Memory:", *[f"- {r}" for r in memory]] if memory else []
        return out + (["", "Proposals:", *[f"- {r}" for r in proposed]] if proposed else [])

    def secrets(self) -> dict[str, str]:
        """Configured secret values by name (read once per turn), for redaction."""
        if self._secrets is None:
            from anima.credentials import known_secrets
            from anima.home import Home

            handed = [  # what this agent's own MCP servers are handed (agent.toml)
                name
                for server in self.config.mcp.values()
                for name in (*server.pass_env, *server.headers_env.values())
            ]
            self._secrets = known_secrets(Home(self.agent_dir.parent.parent), handed)
        return self._secrets


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    schema: dict[str, Any]
    fn: Callable[..., str]
    enabled: Callable[[AgentConfig], bool] = lambda config: True
    refusal: Callable[[AgentConfig], str | None] = lambda config: None
    """Why this enabled tool cannot be offered on this machine (a config error), or None."""

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.schema)

    def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        return str(self.fn(ctx, **validate(self.schema, args)))


_REGISTRY: dict[str, Tool] = {}

_JSON_TYPES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _param_docs(doc: str) -> tuple[str, dict[str, str]]:
    """Split a docstring into the description and `name: text` lines under `Args:`."""
    desc, _, args = doc.partition("Args:")
    params = {}
    for line in args.splitlines():
        name, sep, text = line.strip().partition(":")
        if sep and name.isidentifier():
            params[name] = text.strip()
    return " ".join(desc.split()), params


def _schema_for(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return {"type": "string", "enum": list(typing.get_args(tp))}
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _schema_for(inner[0])
    if origin is dict or tp is dict:
        return {"type": "object"}
    return {"type": _JSON_TYPES[tp]}


def tool(
    name: str | None = None,
    *,
    enabled: Callable[[AgentConfig], bool] | None = None,
    refusal: Callable[[AgentConfig], str | None] | None = None,
) -> Callable[[Callable[..., str]], Tool]:
    """Register `fn(ctx, ...) -> str` as a tool; its first parameter is the ToolContext."""

    def deco(fn: Callable[..., str]) -> Tool:
        hints = typing.get_type_hints(fn)
        description, docs = _param_docs(inspect.getdoc(fn) or "")
        props: dict[str, Any] = {}
        required = []
        for pname, param in list(inspect.signature(fn).parameters.items())[1:]:
            prop = _schema_for(hints[pname])
            if pname in docs:
                prop["description"] = docs[pname]
            if param.default is inspect.Parameter.empty:
                required.append(pname)
            else:
                prop["default"] = param.default
            props[pname] = prop
        schema = {
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": False,
        }
        t = Tool(
            name or fn.__name__,
            description,
            schema,
            fn,
            enabled or (lambda c: True),
            refusal or (lambda c: None),
        )
        _REGISTRY[t.name] = t
        return t

    return deco


def validate(schema: dict[str, Any], args: Any) -> dict[str, Any]:
    """Check arguments against the (flat) schema with errors a model can act on."""
    if not isinstance(args, dict):
        raise ToolError("arguments must be a JSON object")
    props = schema["properties"]
    unknown = sorted(set(args) - set(props))
    if unknown:
        raise ToolError(f"unknown argument(s) {', '.join(unknown)}; expected {', '.join(props)}")
    missing = [r for r in schema["required"] if r not in args]
    if missing:
        raise ToolError(f"missing required argument(s): {', '.join(missing)}")
    checks = {
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "object": dict,
    }
    for key, value in args.items():
        prop = props[key]
        expected = checks[prop["type"]]
        wrong_bool = isinstance(value, bool) and prop["type"] in ("integer", "number")
        if not isinstance(value, expected) or wrong_bool:  # type: ignore[arg-type]
            raise ToolError(f"argument {key!r} must be a {prop['type']}, not {value!r}"[:300])
        if isinstance(value, str) and not _encodable(value):
            raise ToolError(f"argument {key!r} is not valid text (it holds a lone surrogate)")
        if "enum" in prop and value not in prop["enum"]:
            raise ToolError(f"argument {key!r} must be one of {prop['enum']}, not {value!r}")
    return args


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def registry() -> dict[str, Tool]:
    from anima.tools import files, http, memory, messaging, propose, schedule, shell  # noqa: F401

    return dict(_REGISTRY)


def available(config: AgentConfig) -> list[Tool]:
    """The tools this agent may use: registered, not disabled, and allowed by its policy.
    Raises BadConfig when an enabled tool cannot run safely here (shell without a sandbox)."""
    tools = [
        t
        for name, t in sorted(registry().items())
        if name not in config.tools.disabled and t.enabled(config)
    ]
    for t in tools:
        why = t.refusal(config)
        if why:
            raise BadConfig(why)
    return tools


def run_tool(tools: dict[str, Tool], ctx: ToolContext, name: str, args: Any) -> tuple[str, bool]:
    """Run one call. Returns (content, is_error). Nothing a tool raises escapes: a refusal goes
    back to the model to correct, and so does a bug (logged with its traceback), so one bad call
    never ends the turn. Secret values are redacted from the content."""
    out, is_error = _dispatch(tools, ctx, name, args)
    out = redact(out, ctx.secrets())  # before the cut: a cut could leave half a secret
    limit = MAX_ERROR_CHARS if is_error else MAX_RESULT_CHARS
    if len(out) > limit:
        out = out[:limit] + f"\n[truncated: {len(out)} characters, showing the first {limit}]"
    return out, is_error


def _dispatch(tools: dict[str, Tool], ctx: ToolContext, name: str, args: Any) -> tuple[str, bool]:
    t = tools.get(name)
    if t is None:
        return f"unknown tool {name!r}; available: {', '.join(sorted(tools))}", True
    try:
        return t.run(ctx, args), False
    except ToolError as exc:
        return str(exc), True
    except Exception as exc:
        log.exception("tool %s failed on arguments %.500r", name, args)
        return f"{name} failed: {type(exc).__name__}: {exc}", True


def redact(text: str, secrets: dict[str, str]) -> str:
    """`text` with every secret value replaced by a marker naming it (longest values first, so
    a secret that contains another is replaced whole)."""
    for name, value in sorted(secrets.items(), key=lambda kv: -len(kv[1])):
        if value in text:
            text = text.replace(value, f"[redacted: {name}]")
    return text
