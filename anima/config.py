"""Typed, validated configuration: anima.toml (global) and agent.toml (per agent).

Plain dataclasses and a small loader rather than pydantic, so that `anima tick` and `anima send`
stay fast to start (DESIGN §8).
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from anima.errors import BadConfig

T = TypeVar("T")


@dataclass(frozen=True)
class Budget:
    memory_chars: int = 4000
    """Hard cap on memory/MEMORY.md, shown to the model as used/limit."""
    history_tokens: int = 12000
    """How much conversation history goes into context (≈ 4 characters a token)."""
    message_chars: int = 20000
    """Longest message body put into context; longer ones are cut with a notice."""
    note_chars: int = 20000
    """Cap on any other memory note."""
    recall_chars: int = 1500
    """Memory and earlier conversations found by search for the new messages, put in context."""
    recall_hits: int = 5
    persona_chars: int = 20000
    """Cap on persona.md in context (cut with a notice)."""
    always_chars: int = 8000
    """Cap on always.md, and on the global always.md, in context."""
    skills_chars: int = 2000
    """The skills catalogue (name and description of each skill) in context."""
    reflection_tokens: int = 60000
    """Input plus output tokens one nightly reflection may spend; past it, it stops and commits."""
    memory_turn_bytes: int = 64 * 1024
    """Total bytes the memory tool may write in one turn (every note written counts in full)."""
    memory_total_bytes: int = 2 * 1024 * 1024
    """Cap on the size of the whole memory/ folder; writes that would grow past it are refused."""


@dataclass(frozen=True)
class ShellPolicy:
    enabled: bool = False
    timeout: float = 30.0
    output_chars: int = 16000
    network: bool = False
    """Let sandboxed commands use the network (off: the sandbox has its own empty network)."""
    unsafe: bool = False
    """Run commands without a sandbox when bubblewrap (bwrap) is not available. Without it,
    enabling shell on such a machine is refused."""


@dataclass(frozen=True)
class HttpPolicy:
    enabled: bool = True
    timeout: float = 20.0
    max_bytes: int = 512 * 1024
    allow_private: bool = False
    """Allow loopback/private addresses (off: an agent cannot probe your LAN or local services)."""


@dataclass(frozen=True)
class SchedulePolicy:
    max_reminders: int = 50
    """Reminders an agent may have set at once; more are refused until some fire or are cancelled."""
    min_repeat_minutes: float = 15.0
    """Shortest interval between two firings of a repeating (cron) reminder."""


@dataclass(frozen=True)
class Tools:
    disabled: list[str] = field(default_factory=list)
    shell: ShellPolicy = field(default_factory=ShellPolicy)
    http: HttpPolicy = field(default_factory=HttpPolicy)
    schedule: SchedulePolicy = field(default_factory=SchedulePolicy)
    file_max_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class Heartbeat:
    every: str = ""
    """e.g. "30m", "2h", "1d"; empty: no heartbeat."""
    active_hours: str = ""
    """e.g. "08:00-22:00" (local time); outside them a tick delivers nothing."""
    on_calendar: str = ""
    """A systemd OnCalendar expression, overriding `every` for the timer unit."""
    cron: str = ""
    """A crontab schedule, overriding `every` for `anima cron`."""


@dataclass(frozen=True)
class Autonomy:
    """Budgets for the work an agent starts itself: heartbeats, reminders and messages from other
    agents. Used up, that work pauses until `anima resume NAME`; messages from people are always
    answered and never counted. Windows are rolling (the last hour, the last 24 hours); 0: no limit."""

    turns_per_hour: int = 30
    turns_per_day: int = 300
    tokens_per_day: int = 2_000_000
    """Input plus output tokens of self-started turns."""

    def __post_init__(self) -> None:
        for key, value in dataclasses.asdict(self).items():
            if value < 0:
                raise BadConfig(f"autonomy.{key} must be 0 (no limit) or more, not {value}")


@dataclass(frozen=True)
class Proposals:
    """How an agent's proposals to change itself (persona, always.md, skills, some config) are
    decided: by a person, unless listed in `auto_apply`."""

    auto_apply: list[str] = field(default_factory=list)
    """What is applied without a person, e.g. ["always", "skills"]; empty (the default): none."""
    revert_after_failures: int = 2
    """Failed turns right after an approved change that revert it automatically (0: never)."""
    check_turns: int = 5
    """Recorded turns replayed (their context assembled, no model call) to check a proposal."""


@dataclass(frozen=True)
class Reflection:
    """The nightly reflection: the agent reads its day and consolidates memory."""

    at: str = ""
    """Local time, "03:30"; empty: no reflection."""


@dataclass(frozen=True)
class McpServer:
    """One Model Context Protocol server: `[mcp.NAME]` in anima.toml (every agent) or in
    agent.toml (that agent; the same name there replaces the global one)."""

    command: str = ""
    """stdio: the program to start (with `args`); give this or `url`."""
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for the program: plain values only, never secrets."""
    pass_env: list[str] = field(default_factory=list)
    """Names of variables copied from the runtime's environment (API keys stay out of files)."""
    url: str = ""
    """Streamable HTTP: the server's endpoint."""
    headers_env: dict[str, str] = field(default_factory=dict)
    """HTTP header name → the environment variable holding its value (e.g. a bearer token)."""
    allow: list[str] = field(default_factory=list)
    """Tool names offered to the model; empty: all the server lists."""
    timeout: float = 30.0
    """Seconds a call may take before the model gets a tool error instead."""
    enabled: bool = True


@dataclass(frozen=True)
class AgentConfig:
    provider: str = "auto"
    """auto | anthropic | ollama | offline (auto: Anthropic with a key, else Ollama if reachable)."""
    model: str = ""
    fallback: list[str] = field(default_factory=list)
    owner: str = "you"
    trusted_channels: list[str] = field(default_factory=lambda: ["cli", "file", "timer", "agent"])
    max_steps: int = 8
    max_tokens: int = 1024
    temperature: float | None = None
    budget: Budget = field(default_factory=Budget)
    tools: Tools = field(default_factory=Tools)
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    autonomy: Autonomy = field(default_factory=Autonomy)
    mcp: dict[str, McpServer] = field(default_factory=dict)
    proposals: Proposals = field(default_factory=Proposals)
    reflection: Reflection = field(default_factory=Reflection)


@dataclass(frozen=True)
class ProviderSettings:
    """`[providers]`: what every endpoint shares. Its sub-tables `[providers.NAME]` are the
    endpoints (`kind`, `model` and the kind's own keys), checked by anima/llm/registry.py."""

    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    anthropic_base_url: str = ""
    """Earlier releases' flat keys, still read: now `[providers.anthropic] base_url`, ..."""
    anthropic_api_key_env: str = ""
    ollama_host: str = ""
    timeout: float = 120.0
    retries: int = 4
    backoff: float = 1.0
    """First retry delay in seconds; doubles each time, with jitter."""
    max_backoff: float = 30.0


@dataclass(frozen=True)
class RuntimeSettings:
    max_concurrent_turns: int = 4
    """Turns of different agents that run at once (one agent's turns never overlap)."""
    max_agent_hops: int = 3
    """Agent-to-agent messages in one chain before the router stops delivering them."""
    max_attempts: int = 5
    """Failed turns a message gets before it is moved to inbox/rejected/ with its errors."""
    grace_seconds: float = 30.0
    """On SIGTERM, how long an in-flight turn may take to finish before it is abandoned."""
    watch_step_ms: int = 4
    """watchfiles step: a change is seen within step..2*step ms. The watcher thread wakes every
    step, whatever the number of agents: 2 ms cost ~0.9 % of a core idle, 4 ms ~0.3 %, for
    ~2 ms more wake latency (bench/watcher_idle.py, bench/wake_latency.py)."""
    settle_ms: int = 200
    """A file written in place (not renamed in) is read once unchanged for this long."""
    retry_backoff: float = 5.0
    """First delay before retrying an agent whose turn failed; doubles up to 10 minutes."""
    gc_every_turns: int = 200
    """An agent's repository is packed (`git gc --auto`, under its lock) every this many turns."""


@dataclass(frozen=True)
class Delivery:
    """How an adapter retries outgoing messages."""

    max_attempts: int = 8
    """Transient failures before a message is dead-lettered to spool/<channel>/failed/ (or spool/peer-NAME/)."""
    backoff: float = 2.0
    """First retry delay in seconds; doubles each attempt up to max_backoff."""
    max_backoff: float = 300.0
    send_timeout: float = 30.0
    """One send taking longer than this counts as a transient failure (a stuck recipient)."""
    concurrency: int = 4
    keep_months: int = 3
    """Sent records (copies: the agent's outbox keeps the original in git) and webhook replies
    older than this many months are removed, so the spool does not grow for ever."""


@dataclass(frozen=True)
class PeerConfig:
    """`[peers.NAME]`: another Anima home, reached as `agent@NAME`."""

    url: str = ""
    """`ssh://[user@]host[:port]/path/to/home` runs `anima serve-peer` there over SSH;
    `http(s)://host[:port][/prefix]` is the other home's webhook channel (needs secret_env);
    `file:///path/to/home` is another home on this machine."""
    secret_env: str = ""
    """HTTP peers: the environment variable holding the HMAC secret both homes share."""
    ssh_command: list[str] = field(default_factory=lambda: ["ssh"])
    """The SSH client and its options, e.g. ["ssh", "-i", "~/.ssh/anima"]."""
    remote_command: str = "anima"
    """How to run Anima on the other side (ssh:// and file:// peers)."""
    accept_agents: bool = False
    """Let this peer move agents here (`anima move NAME --to` this home): they run with this
    home's keys and tools, so only from a peer you would give them to."""
    delivery: Delivery = field(default_factory=Delivery)


@dataclass(frozen=True)
class RemoteConfig:
    """`[remotes.NAME]`: a git remote the agents' repositories are pushed to (anima/remotes.py)."""

    url: str = ""
    """A git URL; `{agent}` is replaced by the agent's name (`/srv/anima/{agent}.git`)."""
    agents: list[str] = field(default_factory=list)
    """The agents pushed here; empty: every agent (then the URL must hold `{agent}`)."""
    interval: float = 0.0
    """Seconds between pushes; 0: soon after each turn."""
    lease_seconds: float = 300.0
    """How long this host's lease on an agent lasts (renewed in the background at half)."""


@dataclass(frozen=True)
class GlobalConfig:
    provider: str = "auto"
    model: str = ""
    fallback: list[str] = field(default_factory=list)
    providers: ProviderSettings = field(default_factory=ProviderSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    mcp: dict[str, McpServer] = field(default_factory=dict)
    host_name: str = ""
    """This home's name as its peers know it (`arya@NAME`); default: the machine's host name."""
    peers: dict[str, PeerConfig] = field(default_factory=dict)
    remotes: dict[str, RemoteConfig] = field(default_factory=dict)
    owner_addresses: frozenset[str] = frozenset()
    """`channel:user` of the owner on each [channels.NAME] table (trusted senders); read from
    those tables, not set directly."""


def _check(value: Any, tp: Any, where: str) -> Any:
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise BadConfig(f"{where} must be a table")
        return build(tp, value, where)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in typing.get_args(tp):
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        return _check(value, inner, where)
    if origin in (dict, list):
        return _container(value, tp, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise BadConfig(f"{where} must be a number, not {value!r}")
    if not isinstance(value, tp):
        raise BadConfig(f"{where} must be {tp.__name__}, not {value!r}")
    return value


def _container(value: Any, tp: Any, where: str) -> Any:
    """A `dict[str, X]` (a TOML table of X) or a `list[X]`, each item checked."""
    if typing.get_origin(tp) is dict:
        _, item = typing.get_args(tp)
        if not isinstance(value, dict):
            raise BadConfig(f"{where} must be a table")
        return {str(k): _check(v, item, f"{where}.{k}") for k, v in value.items()}
    (item,) = typing.get_args(tp)
    if not isinstance(value, list):
        raise BadConfig(f"{where} must be a list")
    return [_check(v, item, f"{where}[{i}]") for i, v in enumerate(value)]


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def build(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from a TOML table, rejecting unknown keys and wrong types."""
    hints = _hints(typing.cast(Any, cls))  # a class is hashable; mypy cannot see it for type[T]
    names = set(hints)
    unknown = sorted(set(data) - names)
    if unknown:
        raise BadConfig(f"{where or 'config'}: unknown key(s) {', '.join(unknown)}")
    kwargs = {k: _check(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise BadConfig(f"{path}: {exc}") from exc


def load_agent_config(path: Path) -> AgentConfig:
    data = load_toml(path)
    try:
        return build(AgentConfig, data)
    except BadConfig as exc:
        raise BadConfig(f"{path}: {exc}") from exc


def load_global_config(path: Path) -> GlobalConfig:
    data = load_toml(path)
    channels = data.pop("channels", None)  # owned by the channel adapters, but for the owner
    owners = frozenset(
        f"{name}:{table['owner']}"
        for name, table in (channels.items() if isinstance(channels, dict) else ())
        if isinstance(table, dict) and table.get("owner")
    )
    providers = data.get("providers")
    if isinstance(providers, dict):  # [providers.NAME] tables are the endpoints
        tables = {k: v for k, v in providers.items() if isinstance(v, dict)}
        flat = {k: v for k, v in providers.items() if not isinstance(v, dict)}
        data["providers"] = {**flat, "endpoints": tables} if tables else flat
    try:
        return dataclasses.replace(build(GlobalConfig, data), owner_addresses=owners)
    except BadConfig as exc:
        raise BadConfig(f"{path}: {exc}") from exc
