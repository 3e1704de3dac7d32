"""An agent directory: its paths, its validated agent.toml, persona and always.md."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from anima.config import AgentConfig, load_agent_config
from anima.errors import AgentExists
from anima.home import Home, validate_name
from anima.packaged import data_dir


def template_dir() -> Path:
    return data_dir("agents-template")


@dataclass(frozen=True)
class Agent:
    home: Home
    name: str

    @classmethod
    def open(cls, home: Home, name: str) -> Agent:
        home.agent_dir(name)  # raises AgentNotFound with the list of agents
        return cls(home, name)

    @property
    def path(self) -> Path:
        return self.home.agents_dir / self.name

    @property
    def inbox(self) -> Path:
        return self.path / "inbox"

    @property
    def memory_dir(self) -> Path:
        return self.path / "memory"

    @property
    def workspace(self) -> Path:
        return self.path / "workspace"

    @property
    def history_dir(self) -> Path:
        return self.path / "history"

    @property
    def outbox(self) -> Path:
        return self.path / "outbox"

    @property
    def archive(self) -> Path:
        return self.path / "archive"

    @cached_property
    def config(self) -> AgentConfig:
        return load_agent_config(self.path / "agent.toml")

    def read(self, relative: str) -> str:
        try:
            return (self.path / relative).read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    @property
    def persona(self) -> str:
        return self.read("persona.md")

    @property
    def always(self) -> str:
        return self.read("always.md")


def create_agent(home: Home, name: str) -> Agent:
    """Copy the template into agents/NAME, fill in the name, `git init` and make the first commit."""
    from anima import gitstore

    validate_name(name)
    home.require()
    target = home.agents_dir / name
    if target.exists():
        raise AgentExists(f"agent {name!r} already exists at {target}")
    staging = home.agents_dir / f".new-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(template_dir(), staging)
    for path in staging.rglob("*"):
        if path.is_file() and path.suffix in (".md", ".toml"):
            text = path.read_text(encoding="utf-8")
            path.write_text(text.replace("{{name}}", name), encoding="utf-8")
    for sub in ("inbox", "outbox", "archive", "history", "workspace"):
        (staging / sub).mkdir(exist_ok=True)
    gitstore.init_repo(staging, name)
    staging.rename(target)  # the agent appears whole or not at all
    return Agent(home, name)
