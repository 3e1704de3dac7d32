"""ANIMA_HOME: the root directory, its global config and the list of agents."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from anima.config import GlobalConfig, load_global_config
from anima.errors import AgentNotFound, BadName, HomeNotFound

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
RESERVED_NAMES = {"all", "you", "me", "anima", "system"}

DEFAULT_ANIMA_TOML = """\
# Anima global configuration. Agents override provider/model in their own agent.toml.
provider = "auto"     # auto | anthropic | openai | ollama | offline | a [providers.NAME] below
model = ""            # empty: the provider's default model
fallback = []         # e.g. ["ollama", "offline"] or ["openrouter/some/model"]: tried in order

[providers]           # shared by every endpoint
timeout = 120.0
retries = 4
backoff = 1.0

[providers.anthropic]
api_key_env = "ANTHROPIC_API_KEY"   # the key is read from the environment, never stored
base_url = ""                       # empty: the SDK default

[providers.openai]                  # also OpenRouter, vLLM, llama.cpp, LM Studio, Groq, ...
api_key_env = "OPENAI_API_KEY"      # "" for a local server that needs no key
base_url = ""                       # e.g. "http://127.0.0.1:8080/v1"; empty: api.openai.com

[providers.ollama]
host = ""                           # empty: http://127.0.0.1:11434

# More endpoints: any name, one table each, e.g.
# [providers.openrouter]
# kind = "openai"
# base_url = "https://openrouter.ai/api/v1"
# api_key_env = "OPENROUTER_API_KEY"
# model = "meta-llama/llama-3.3-70b-instruct"

[runtime]
max_concurrent_turns = 4   # turns of different agents at once
max_agent_hops = 3         # agent-to-agent messages in one chain before delivery stops
max_attempts = 5           # failed turns before a message is moved to inbox/rejected/
grace_seconds = 30.0       # on SIGTERM, time an in-flight turn gets to finish

# Other Anima homes (your VPS, your home server), their agents addressed as agent@NAME. Name
# this home for them with host_name = "laptop" at the very top of this file. E.g.
# [peers.vps]
# url = "ssh://me@vps.example.org/~/.anima"   # or https://... (secret_env), file:///path
# remote_command = "/home/me/.venv/bin/anima"
# accept_agents = false                        # true: `anima move NAME --to` here from it
"""

DEFAULT_ALWAYS = """\
Reply in the language you were written to. Be concise.
"""


def validate_name(name: str) -> str:
    """Agent names become directory names and addresses: lower-case, no separators, no dot first."""
    if not _NAME_RE.match(name):
        raise BadName(
            f"agent name {name!r} is not valid: use 1-40 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    if name in RESERVED_NAMES:
        raise BadName(f"agent name {name!r} is reserved")
    return name


def _agent_name(name: str) -> bool:
    return bool(_NAME_RE.match(name)) and name not in RESERVED_NAMES


RACY_SECONDS = 2.0
"""A directory changed this recently may change again within its mtime's granularity (a
second or two on some file systems) without the mtime moving: such a listing is not kept."""


class AgentList:
    """The agent names under agents/, kept while they cannot have changed: listing stats every
    agent's agent.toml, and a turn asks several times. Making, removing or renaming an agent
    (`anima new` renames a finished `.new-NAME` into place) moves agents/'s mtime; a folder
    that had no agent.toml yet is looked at again each time. Deleting the agent.toml of an
    agent left in place is not noticed until agents/ itself changes."""

    def __init__(self) -> None:
        self._kept: tuple[int, list[str], list[Path]] | None = None
        """(agents/'s mtime_ns, the names, folders with a valid name but no agent.toml)"""

    def names(self, agents_dir: Path) -> list[str]:
        try:
            mtime = os.stat(agents_dir).st_mtime_ns
        except (FileNotFoundError, NotADirectoryError):
            return []
        kept = self._kept  # one read: worker threads share this list
        if kept is not None and kept[0] == mtime and not any(_is_agent(p) for p in kept[2]):
            return list(kept[1])
        names: list[Path] = []
        unfinished: list[Path] = []
        with os.scandir(agents_dir) as entries:
            for entry in entries:
                if entry.is_dir() and _agent_name(entry.name):
                    path = Path(entry.path)
                    (names if _is_agent(path) else unfinished).append(path)
        listed = sorted(p.name for p in names)
        racy = time.time_ns() - mtime < RACY_SECONDS * 1e9
        self._kept = None if racy else (mtime, listed, unfinished)
        return list(listed)


def _is_agent(path: Path) -> bool:
    return (path / "agent.toml").is_file()


def default_root() -> Path:
    env = os.environ.get("ANIMA_HOME")
    return Path(env).expanduser() if env else Path.home() / ".anima"


@dataclass(frozen=True)
class Home:
    root: Path
    _agents: AgentList = field(
        default_factory=AgentList, init=False, repr=False, compare=False, hash=False
    )

    @classmethod
    def locate(cls, root: str | Path | None = None) -> Home:
        return cls(Path(root).expanduser().absolute() if root else default_root().absolute())

    @property
    def agents_dir(self) -> Path:
        return self.root / "agents"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def spool_dir(self) -> Path:
        return self.root / "spool"

    @property
    def config_path(self) -> Path:
        return self.root / "anima.toml"

    @property
    def always_path(self) -> Path:
        return self.root / "always.md"

    def exists(self) -> bool:
        return self.config_path.is_file() and self.agents_dir.is_dir()

    def require(self) -> Home:
        if not self.exists():
            raise HomeNotFound(f"no Anima home at {self.root}: run `anima init` first")
        return self

    def init(self) -> bool:
        """Create the home if needed. Returns True if anything was created. Never overwrites."""
        created = not self.exists()
        for d in (self.agents_dir, self.run_dir, self.spool_dir):
            d.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():
            self.config_path.write_text(DEFAULT_ANIMA_TOML, encoding="utf-8")
        if not self.always_path.exists():
            self.always_path.write_text(DEFAULT_ALWAYS, encoding="utf-8")
        return created

    def config(self) -> GlobalConfig:
        return load_global_config(self.config_path)

    def global_always(self) -> str:
        try:
            return self.always_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    def agent_names(self) -> list[str]:
        """The agents, sorted: folders under agents/ with a valid name and an agent.toml.
        Cheap to call again (AgentList): one stat while nothing under agents/ changed."""
        return self._agents.names(self.agents_dir)

    def invalid_agent_dirs(self) -> list[Path]:
        """Directories under agents/ that look like agents but whose name is not a valid agent
        name: the runtime never reads them, so messages put in their inbox wait forever."""
        if not self.agents_dir.is_dir():
            return []
        return sorted(
            p
            for p in self.agents_dir.iterdir()
            if not _agent_name(p.name)  # first: the one test that needs no system call
            and not p.name.startswith(".")  # .new-NAME: an agent being created
            and p.is_dir()
            and ((p / "agent.toml").is_file() or (p / "inbox").is_dir())
        )

    def invalid_agent_problem(self, path: Path) -> str:
        """Why agents/<path.name> is ignored, and how to fix it."""
        try:
            validate_name(path.name)
            reason = "its name is not valid"
        except BadName as exc:
            reason = str(exc)
        return (
            f"{path} is ignored: {reason}; its messages wait until it is renamed: "
            f"anima rename '{path.name}' NEW"
        )

    def agent_dir(self, name: str) -> Path:
        validate_name(name)
        path = self.agents_dir / name
        if not (path / "agent.toml").is_file():
            known = ", ".join(self.agent_names()) or "none yet: `anima new NAME`"
            raise AgentNotFound(f"no agent named {name!r} in {self.root} (agents: {known})")
        return path
