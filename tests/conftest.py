"""Fixtures: every test gets its own ANIMA_HOME, real git repos, and a fake model server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self

import pytest

from anima import mailbox
from anima.agent import Agent, create_agent
from anima.home import Home
from anima.message import Message
from anima.testing import FakeModelServer

_ENV_TO_CLEAR = (
    *("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"),
    *("OLLAMA_HOST", "ANIMA_HOME"),
)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test can touch a real home, a real API key or a real model host."""
    for var in _ENV_TO_CLEAR:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ANIMA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def fake() -> Iterator[FakeModelServer]:
    with FakeModelServer() as server:
        yield server


def write_global_config(
    home: Home, url: str, runtime: dict[str, object] | None = None, **overrides: object
) -> None:
    settings = {
        "anthropic_base_url": url,
        "ollama_host": url,
        "retries": 2,
        "backoff": 0.01,
        "max_backoff": 2.0,
        "timeout": 10.0,
        **overrides,
    }
    lines = ['provider = "auto"', "", "[providers]"]
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in settings.items()]
    lines += ["", "[runtime]"]
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in (runtime or {}).items()]
    home.config_path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def home(tmp_path: Path, fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch) -> Home:
    h = Home(tmp_path / "home")
    h.init()
    write_global_config(h, fake.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    return h


def set_toml(agent: Agent, **values: object) -> None:
    """Set top-level keys of agent.toml (as a person would edit it)."""
    path = agent.path / "agent.toml"
    text = path.read_text()
    for key, value in values.items():
        rendered = str(value).lower() if isinstance(value, bool) else repr(value).replace("'", '"')
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {rendered}", text)
        if n == 0:
            text = f"{key} = {rendered}\n" + text
    path.write_text(text)


def make_agent(
    home: Home, name: str = "arya", provider: str = "anthropic", **values: object
) -> Agent:
    agent = create_agent(home, name)
    set_toml(agent, provider=provider, **values)
    return Agent(home, name)


def send(agent: Agent, text: str, **kw: object) -> Message:
    msg = Message.create(sender=str(kw.pop("sender", "you")), to=agent.name, body=text, **kw)  # type: ignore[arg-type]
    mailbox.deliver(agent.path, msg)
    return msg


class AnimaProcess:
    """An `anima` command in a subprocess, as systemd runs it: started until it prints `ready`,
    its output collected, stopped with a real signal."""

    args: tuple[str, ...] = ()
    ready = ""

    def __init__(self, home: Home, env: dict[str, str] | None = None):
        self.home = home
        self.env = {**os.environ, "ANIMA_HOME": str(home.root), **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []

    def start(self, timeout: float = 20.0) -> Self:
        self.lines = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "anima", *self.args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        for line in self.proc.stdout:
            self.lines.append(line)
            if self.ready in line or time.monotonic() > deadline:
                break
        assert self.proc.poll() is None and self.ready in "".join(self.lines), "".join(self.lines)
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def output(self) -> str:
        return "".join(self.lines)

    def __enter__(self) -> Self:
        return self if self.proc else self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class LiveRuntime(AnimaProcess):
    """`anima run`: the real watch loop, the real signals."""

    args = ("run",)
    ready = "anima run: watching"


def wait_for(
    predicate: Callable[[], object], timeout: float = 20.0, what: str = "condition"
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def replies(agent: Agent) -> list[Message]:
    from anima.mailbox import read_message

    return [read_message(p, agent.name) for p in sorted(agent.outbox.rglob("*.md"))]


class ChannelProcess(AnimaProcess):
    """`anima channel NAME`; `ready` is the log line that says it is serving."""

    def __init__(self, home: Home, name: str, env: dict[str, str] | None = None, ready: str = ""):
        super().__init__(home, env)
        self.args = ("channel", name)
        self.ready = ready or ("listening on" if name == "webhook" else "serving")


def add_channel(
    home: Home, name: str, delivery: dict[str, object] | None = None, **values: object
) -> None:
    """Append a [channels.NAME] table to anima.toml, as a person would."""

    def toml(v: object) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, list):
            return "[" + ", ".join(toml(x) for x in v) + "]"
        return repr(v).replace("'", '"')

    lines = ["", f"[channels.{name}]"] + [f"{k} = {toml(v)}" for k, v in values.items()]
    if delivery:
        lines += ["", f"[channels.{name}.delivery]"] + [
            f"{k} = {toml(v)}" for k, v in delivery.items()
        ]
    with open(home.config_path, "a") as fh:
        fh.write("\n".join(lines) + "\n")
