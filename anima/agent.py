"""An agent directory: its paths, its validated agent.toml, persona and always.md."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from anima.config import AgentConfig, load_agent_config
from anima.errors import AgentExists, BadConfig, BadName
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


RUN_STATE = (
    *("attempts/{}.json", "heartbeats/{}", "reminders/{}.json", "routed/{}", "stream/{}"),
    "proposals/{}.json",
    *("leases/{}.json", "pushes/{}.json", "adopted/{}"),
)
"""An agent's runtime state under run/, keyed by its name (attempts.py, schedule.py, router.py,
stream.py): it moves with a rename, so reminders still fire and sent replies are not re-routed."""


def _refuse_while_live(home: Home, doing: str) -> None:
    from anima import status
    from anima.errors import Busy

    if status.runtime_live(home):
        raise Busy(
            f"cannot {doing} while a runtime is live for {home.root} ({status.live_holder(home)}):"
            " stop it first (systemctl --user stop anima, Ctrl-C, or leave the chat)"
        )


@contextmanager
def _exclusive(home: Home, name: str, doing: str) -> Iterator[None]:
    """No runtime and no `run --once` may be working on the agent while its directory moves."""
    from anima import gitstore

    _refuse_while_live(home, doing)
    with gitstore.agent_lock(home.run_dir / "locks" / f"{name}.lock", timeout=5):
        yield


def _move_run_state(home: Home, name: str, new_name: str, into: Path | None = None) -> None:
    for pattern in RUN_STATE:
        src = home.run_dir / pattern.format(name)
        if src.exists():
            dst = (into or home.run_dir) / pattern.format(new_name)
            dst.parent.mkdir(parents=True, exist_ok=True)
            src.rename(dst)


def trash_dir(home: Home) -> Path:
    return home.root / "trash"


def remove_agent(home: Home, name: str) -> Path:
    """Archive agents/NAME (its whole git repository) to trash/NAME-<stamp>/, with its runtime
    state in trash/NAME-<stamp>.run/. Nothing is deleted: moving it back restores the agent."""
    Agent.open(home, name)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = trash_dir(home) / f"{name}-{stamp}"
    with _exclusive(home, name, f"remove {name}"):
        target.parent.mkdir(parents=True, exist_ok=True)
        (home.agents_dir / name).rename(target)
        _move_run_state(home, name, name, into=target.with_name(target.name + ".run"))
    return target


def rename_agent(home: Home, old: str, new: str) -> Agent:
    """Rename agents/OLD to agents/NEW, keeping its git history and runtime state; the agent's
    git identity (the author of its turns from now on) takes the new name."""
    from anima.gitstore import BOT_EMAIL_DOMAIN

    if home.agents_dir / old not in home.invalid_agent_dirs():  # those are renamed to be used
        Agent.open(home, old)
    validate_name(new)
    target = home.agents_dir / new
    if target.exists():
        raise AgentExists(f"agent {new!r} already exists at {target}")
    with _exclusive(home, old, f"rename {old}"):
        (home.agents_dir / old).rename(target)
        _move_run_state(home, old, new)
        for key, value in (("user.name", new), ("user.email", f"{new}@{BOT_EMAIL_DOMAIN}")):
            subprocess.run(["git", "-C", str(target), "config", key, value], check=True)
    return Agent(home, new)


EDITABLE = {"persona": "persona.md", "always": "always.md", "config": "agent.toml"}
"""What `anima edit NAME WHAT` opens."""


def editable_path(agent: Agent, what: str) -> Path:
    if what not in EDITABLE:
        raise BadName(f"cannot edit {what!r}: choose one of {', '.join(EDITABLE)}")
    return agent.path / EDITABLE[what]


def save_hand_edit(agent: Agent, what: str, text: str, *, subject: str = "") -> str | None:
    """Validate an edited file (agent.toml must load), write it and commit it as a hand edit
    (`subject`: the commit's, when not `anima edit`). Returns the commit sha, or None when
    nothing changed. Raises BadConfig, writing nothing."""
    from anima import gitstore
    from anima.config import load_agent_config
    from anima.fsutil import write_atomic

    path = editable_path(agent, what)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return None
    if what == "config":
        with tempfile.TemporaryDirectory() as tmp:
            draft = Path(tmp) / "agent.toml"
            draft.write_text(text, encoding="utf-8")
            try:
                load_agent_config(draft)
            except BadConfig as exc:
                raise BadConfig(str(exc).replace(str(draft), str(path))) from None
    with gitstore.agent_lock(agent.home.run_dir / "locks" / f"{agent.name}.lock", timeout=30):
        write_atomic(path, text)
        return gitstore.commit(
            agent.path,
            subject or f"edit: {path.name} by hand (anima edit {agent.name} {what})",
            paths=[path.name],
        )


@dataclass(frozen=True)
class EffectiveModel:
    """The provider and model a turn of this agent uses now, and where each was decided."""

    provider: str
    model: str
    provider_from: str
    """agent.toml, anima.toml or auto-detected."""
    model_from: str
    """agent.toml, anima.toml or "provider default"."""


def effective_model(agent: Agent) -> EffectiveModel:
    """Resolve `auto` and empty models the way a turn does (registry.choose)."""
    from anima.llm import registry

    global_ = agent.home.config()
    cfg = agent.config
    provider, model = registry.choose(cfg, global_)[0]
    if cfg.provider != "auto":
        provider_from = "agent.toml"
    elif global_.provider != "auto":
        provider_from = "anima.toml"
    else:
        provider_from = "auto-detected"
    if cfg.model:
        model_from = "agent.toml"
    elif model:
        model_from = "anima.toml"
    else:
        try:
            model = registry.default_model(provider, global_.providers) or "default"
        except BadConfig:
            model = "unknown"
        model_from = "provider default"
    return EffectiveModel(provider, model, provider_from, model_from)
