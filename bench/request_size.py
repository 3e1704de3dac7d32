"""Request size for a trivial turn as an agent grows (issue #13): the characters of the JSON
body the model receives for "hi", for a new agent and for one with 1,000 topic notes, 50 people
notes and 1,000 earlier turns. What keeps it flat: the notes index lists at most 100 notes (the
rest is one line pointing at memory_search), people notes are shown only for who is writing, and
history is cut to `budget.history_tokens`.
"""

from __future__ import annotations

import json
import os

from _common import make_home

from anima import gitstore, mailbox
from anima.message import Message
from anima.runtime import run_once
from anima.testing import FakeModelServer, Reply


def grow(agent_dir, notes: int, people: int) -> None:  # type: ignore[no-untyped-def]
    memory = agent_dir / "memory"
    for i in range(notes):
        (memory / f"topic-{i:04d}.md").write_text(
            f"---\ndescription: notes on topic {i}, with a description of ordinary length\n---\n"
            + "A paragraph of what the agent learned about it. " * 8
            + "\n"
        )
    (memory / "people").mkdir(exist_ok=True)
    for i in range(people):
        (memory / "people" / f"person-{i:02d}.md").write_text(
            f"---\ndescription: person {i}\n---\nWhat I know about person {i}.\n"
        )
    gitstore.commit_external(agent_dir)


def request_chars(fake: FakeModelServer, home, name: str) -> int:  # type: ignore[no-untyped-def]
    before = len(fake.requests)
    mailbox.deliver(home.agents_dir / name, Message.create(sender="you", to=name, body="hi"))
    run_once(home)
    return len(json.dumps(fake.requests[before].body))


if __name__ == "__main__":
    with FakeModelServer(default=Reply("ok")) as fake:
        os.environ["ANTHROPIC_API_KEY"] = "bench-key"
        home = make_home(2, fake.url)
        os.environ["ANIMA_HOME"] = str(home.root)
        print(f"trivial turn, new agent: {request_chars(fake, home, 'a000'):,} characters")
        big = home.agents_dir / "a001"
        grow(big, notes=1000, people=50)
        print(f"1,000 notes, 50 people: {request_chars(fake, home, 'a001'):,} characters")
        for i in range(1000):
            mailbox.deliver(
                big,
                Message.create(sender="you", to="a001", body=f"message {i}", conversation=f"c{i}"),
            )
        run_once(home)  # 1,000 earlier turns, each in a conversation of its own
        for _ in range(60):
            request_chars(fake, home, "a001")  # 60 more in the conversation measured
        print(f"... and 1,060 earlier turns: {request_chars(fake, home, 'a001'):,} characters")
        print(
            "bounded by the budgets, whatever the agent's size: MEMORY.md ≤ budget.memory_chars,"
            " the notes index ≤ 100 lines, history ≤ budget.history_tokens, recall ≤"
            " budget.recall_chars"
        )
