"""Agent Skills in the request (issue #14): the characters of the JSON body the model receives
for a trivial message with 0, 20 and 100 skills installed, and what the catalogue costs a turn.

The turn runs with the built-in tools and the SkillSource, so the request holds the `skill`
tool's spec and the catalogue (context's skills section). Per-turn cost: the catalogue and the
source's tool list with 100 skills, warm (cached by SKILL.md's identity) and cold (cache emptied).
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


def request(fake: FakeModelServer, home: Home, name: str) -> str:
    before = len(fake.requests)
    mailbox.deliver(home.agents_dir / name, Message.create(sender="you", to=name, body="hi"))
    process_agent(home, name, sources=[BuiltinTools(), skills.SkillSource()])
    return json.dumps(fake.requests[before].body, ensure_ascii=False)


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
            body = request(fake, home, name)
            catalogue = skills.catalogue(agent)
            inside = json.dumps(catalogue, ensure_ascii=False)[1:-1] in body
            print(
                f"{n:3d} skills: request {len(body):,} characters; catalogue {len(catalogue):,}"
                + ("" if inside or not catalogue else " (not in the request: add it)")
            )
        agent = Agent(home, "a002")
        for label, cold in (("warm", False), ("cold", True)):
            ms = sorted(per_turn_ms(agent, 200, cold))
            print(
                f"catalogue + tool list, 100 skills, {label}: p50 {statistics.median(ms):.2f} ms,"
                f" p95 {ms[int(len(ms) * 0.95)]:.2f} ms"
            )
