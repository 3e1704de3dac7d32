"""`anima demo`: a whole turn on the offline model in a throwaway home, to see Anima work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from anima import gitstore, mailbox
from anima.agent import create_agent
from anima.home import Home
from anima.message import Message
from anima.runtime import run_once

SCRIPT = (
    "Hello! Who are you?",
    "Remember that my favourite colour is green.",
    "What do you remember?",
)


@dataclass(frozen=True)
class Exchange:
    said: str
    reply: str
    commit: str
    subject: str


def run_demo(root: Path, show: Callable[[Exchange], None] | None = None) -> list[Exchange]:
    """Create a home and agent `arya` under `root`, run SCRIPT through real turns."""
    home = Home(root)
    home.init()
    agent = create_agent(home, "arya")
    # The demo pins the offline model so it behaves the same with or without a key.
    toml = agent.path / "agent.toml"
    toml.write_text(toml.read_text().replace('provider = "auto"', 'provider = "offline"', 1))
    gitstore.commit(agent.path, "demo: configure the offline model", paths=["agent.toml"])
    out = []
    for text in SCRIPT:
        mailbox.deliver(agent.path, Message.create(sender="you", to="arya", body=text))
        (result,) = run_once(home, ["arya"])
        if result.error:
            raise RuntimeError(result.error)
        entry = gitstore.log(agent.path, limit=1)[0]
        ex = Exchange(text, result.reply.body if result.reply else "", entry.short, entry.subject)
        out.append(ex)
        if show:
            show(ex)
    return out
