"""Agent Skills in the request (issue #14): the characters of the JSON body the model receives
for a trivial message with 0, 20 and 100 skills installed, and what the catalogue costs a turn.

The turn runs with the built-in tools and the SkillSource, so the `skill` tool's spec is in the
request; the catalogue (skills.catalogue) is printed beside it, and counted in "with catalogue",
until context.py places it in the request itself. Per-turn cost: catalogue + the source's tool
list with 100 skills, warm (metadata cached by file identity) and cold (cache emptied).
"""

from __future__ import annotations

import json
import os
import statistics
import time

from _common import make_home

from anima import mailbox, skills
from anima.agent import Agent
from anima.home import Home
from anima.message import Message
from anima.testing import FakeModelServer, Reply
from anima.toolset import BuiltinTools
from anima.turn import process_agent

DESCRIPTION = (
    "Work with {what}: read, convert and check them. Use when the user mentions {what} or sends "
    "one, or asks for a report built from them; not for anything else."
)


def install(agent: Agent, n: int) -> None:
    for i in range(n):
        name = f"skill-{i:03d}"
        folder = agent.path / "skills" / name
        (folder / "references").mkdir(parents=True)
        desc = DESCRIPTION.format(what=f"kind {i} files")
        body = "# How to\n\n" + "Step by step instructions for this kind of file.\n" * 40
        (folder / "SKILL.md").write_text(
            f"---\nname: {name}\ndescription: {json.dumps(desc)}\n---\n{body}"
        )
        (folder / "references" / "details.md").write_text("More detail.\n" * 200)


def request_chars(fake: FakeModelServer, home: Home, name: str) -> int:
    before = len(fake.requests)
    mailbox.deliver(home.agents_dir / name, Message.create(sender="you", to=name, body="hi"))
    process_agent(home, name, sources=[BuiltinTools(), skills.SkillSource()])
    return len(json.dumps(fake.requests[before].body))


def per_turn_ms(agent: Agent, runs: int, cold: bool) -> list[float]:
    out = []
    for _ in range(runs):
        if cold:
            skills._load.cache_clear()
        t0 = time.perf_counter()
        skills.catalogue(agent)
        skills.SkillSource().tools(agent)
        out.append((time.perf_counter() - t0) * 1000)
    return out


if __name__ == "__main__":
    with FakeModelServer(default=Reply("ok")) as fake:
        os.environ["ANTHROPIC_API_KEY"] = "bench-key"
        home = make_home(3, fake.url)
        os.environ["ANIMA_HOME"] = str(home.root)
        for name, n in (("a000", 0), ("a001", 20), ("a002", 100)):
            agent = Agent(home, name)
            install(agent, n)
            size = request_chars(fake, home, name)
            cat = len(skills.catalogue(agent))
            print(
                f"{n:3d} skills: request {size:,} characters, catalogue {cat:,}, "
                f"with catalogue {size + cat:,}"
            )
        agent = Agent(home, "a002")
        for label, cold in (("warm", False), ("cold", True)):
            ms = sorted(per_turn_ms(agent, 200, cold))
            print(
                f"catalogue + tool list, 100 skills, {label}: p50 {statistics.median(ms):.2f} ms,"
                f" p95 {ms[int(len(ms) * 0.95)]:.2f} ms"
            )
