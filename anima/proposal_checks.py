"""The checks a proposal passes before anyone sees it, and again before it is applied.

The agent as a proposed tree would make it is checked out into a throwaway home (a git
repository sharing the agent's objects through alternates: nothing copied, nothing of the agent's
own repository written): its agent.toml loads, its skills are valid, persona.md and always.md fit
their budgets, and the contexts of its last recorded turns assemble (no model call).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from anima import gitstore
from anima.agent import Agent
from anima.config import Proposals
from anima.errors import BadConfig
from anima.home import Home
from anima.message import Message


def problems(agent: Agent, tree: str) -> list[str]:
    """What is wrong with the agent as `tree` would make it (empty: nothing): its config loads,
    its skills are valid, its persona fits its budget, and the contexts of its last recorded
    turns assemble with these files (no model call)."""
    from anima import skills
    from anima.config import load_agent_config

    turns = _recent_turns(agent, settings(agent).check_turns)
    with _materialized(agent, tree, turns) as trial:
        found: list[str] = []
        try:
            cfg = load_agent_config(trial.path / "agent.toml")
        except BadConfig as exc:
            return [f"agent.toml does not load: {str(exc).replace(str(trial.path) + '/', '')}"]
        found += [
            f"skill {s.name}: {s.problem}"
            for s in skills.discover(trial.home, trial.name)
            if s.scope == "agent" and s.problem
        ]
        for rel, limit in (
            ("persona.md", cfg.budget.persona_chars),
            ("always.md", cfg.budget.always_chars),
        ):
            size = len(trial.read(rel))
            if size > limit:
                found.append(f"{rel} is {size} characters, over its budget of {limit}")
        found += _replay(trial, turns)
    return found


def _recent_turns(agent: Agent, n: int) -> list[tuple[str, list[str]]]:
    """(conversation, archived message paths) of the agent's last `n` turns on main."""
    from anima.mailbox import archive_path

    out = []
    entries = gitstore.log(agent.path, limit=max(n, 0) * 3 + 10, grep="Anima-Conversation")
    for e in entries:
        conv, ids = e.trailers.get("Anima-Conversation"), e.trailers.get("Anima-Message", "")
        if not conv or not ids or not gitstore.landed(agent.path, e.sha):
            continue
        rels = [
            str(archive_path(agent.path, i.strip()).relative_to(agent.path)) for i in ids.split(",")
        ]
        out.append((conv, rels))
        if len(out) >= n:
            break
    return out


_CHECKER = {"NAME": "anima-check", "EMAIL": f"check@{gitstore.BOT_EMAIL_DOMAIN}"}


class _materialized:
    """A throwaway home holding the agent as `tree` makes it: the files context assembly reads,
    checked out of the agent's object store (shared through git alternates, nothing copied)."""

    def __init__(self, agent: Agent, tree: str, turns: list[tuple[str, list[str]]]):
        self.agent, self.tree, self.turns = agent, tree, turns
        self.tmp = Path(tempfile.mkdtemp(prefix="anima-check-"))

    def __enter__(self) -> Agent:
        home = Home(self.tmp / "home")
        target = home.agents_dir / self.agent.name
        target.mkdir(parents=True)
        if self.agent.home.config_path.is_file():  # owner addresses, for trust in context
            shutil.copyfile(self.agent.home.config_path, home.config_path)
        gitstore._git(target, "init", "-q", "--template=")
        alternates = target / ".git" / "objects" / "info" / "alternates"
        alternates.parent.mkdir(parents=True, exist_ok=True)
        alternates.write_text(str((self.agent.path / ".git" / "objects").resolve()) + "\n")
        wanted = ["persona.md", "always.md", "agent.toml", "skills", "memory"]
        wanted += [f"history/{conv}" for conv, _ in self.turns]
        wanted += [rel for _, rels in self.turns for rel in rels]
        listed = gitstore._git(
            target, "ls-tree", "-r", "-z", "--name-only", self.tree, "--", *wanted
        )
        gitstore._git(target, "read-tree", self.tree)
        names = [n for n in listed.split("\0") if n]
        if names:
            gitstore._git(
                target, "checkout-index", "-f", "-q", "-z", "--stdin", input="\0".join(names)
            )
        who = {f"GIT_{r}_{k}": v for r in ("AUTHOR", "COMMITTER") for k, v in _CHECKER.items()}
        sha = gitstore._git(target, "commit-tree", self.tree, "-m", "check", env=who).strip()
        gitstore._git(target, "update-ref", "HEAD", sha)
        return Agent(home, self.agent.name)

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _replay(trial: Agent, turns: list[tuple[str, list[str]]]) -> list[str]:
    from anima import context
    from anima.mailbox import read_message

    found = []
    batches = []
    for conv, rels in turns:
        msgs = [
            read_message(trial.path / r, trial.name) for r in rels if (trial.path / r).is_file()
        ]
        if msgs:
            batches.append((conv, msgs))
    if not batches:  # no recorded turn yet: one made-up message
        owner = trial.config.owner
        batches.append(("cli", [Message.create(sender=owner, to=trial.name, body="hello")]))
    for conv, msgs in batches:
        try:
            context.assemble(trial, msgs, conv)
        except Exception as exc:  # whatever breaks assembly is what the check is for
            found.append(f"replaying a turn of {conv} fails: {type(exc).__name__}: {exc}")
    return found


def settings(agent: Agent) -> Proposals:
    """The agent's [proposals] settings; the defaults while its agent.toml does not load."""
    try:
        return agent.config.proposals
    except BadConfig:
        return Proposals()
