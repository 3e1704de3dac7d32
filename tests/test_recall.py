"""Recall across days and conversations: search index, memory_search, auto-memory, people notes."""

from __future__ import annotations

import json
import subprocess
import sys

import git
import pytest

from anima import search
from anima.agent import Agent
from anima.home import Home
from anima.runtime import run_once
from anima.testing import FakeModelServer, Reply
from anima.testing.fake_model import last_user_text
from tests.conftest import make_agent, send


def day(monkeypatch: pytest.MonkeyPatch, iso: str) -> None:
    """The simulated clock: every timestamp, file name and journal day follows ANIMA_NOW."""
    monkeypatch.setenv("ANIMA_NOW", iso)


def test_fact_from_day_one_is_recalled_on_day_three_in_a_new_conversation(
    home: Home, fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = make_agent(home)
    day(monkeypatch, "2026-11-01T09:00:00+00:00")
    send(agent, "My sister Ilse just moved to Utrecht, she loves rowing.", conversation="c1")
    send(agent, "The boiler service is due in March.", conversation="house")
    fake.add(Reply("Noted."), Reply("Noted too."))
    run_once(home)
    assert (agent.path / "history/c1/2026-11/2026-11-01.jsonl").exists()

    day(monkeypatch, "2026-11-03T18:30:00+00:00")
    send(agent, "Where did my sister move to?", conversation="c2")
    fake.add(Reply("To Utrecht."))
    run_once(home)
    asked = last_user_text("anthropic", fake.requests[-1].body)
    recalled = asked[asked.index("<recalled") : asked.index("</recalled>")]
    assert "conversation c1 (2026-11-01)" in recalled
    assert "[sister]" in recalled and "Utrecht" in recalled
    assert "boiler" not in recalled  # ranked: only what matches the question
    # The new conversation's own history holds no day-1 turn: it came from recall alone.
    c2 = (agent.path / "history/c2/2026-11/2026-11-03.jsonl").read_text()
    assert "Ilse just moved" not in c2.split("Where did my sister")[0]


def test_memory_search_tool_and_cli_find_notes_and_history_with_dates(
    home: Home, fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = make_agent(home)
    (agent.memory_dir / "projects.md").write_text(
        "---\ndescription: projects\n---\nThe greenhouse build uses cedar planks.\n"
    )
    day(monkeypatch, "2026-10-20T10:00:00+00:00")
    send(agent, "We agreed the greenhouse roof will be polycarbonate.", conversation="plans")
    fake.add(Reply("Polycarbonate it is."))
    run_once(home)
    day(monkeypatch, "2026-10-22T10:00:00+00:00")
    fake.add(
        Reply("", tool_calls=[{"name": "memory_search", "input": {"query": "greenhouse roof"}}]),
        Reply("Found it."),
    )
    send(agent, "what did we decide?", conversation="other")
    run_once(home)
    result = fake.requests[-1].body["messages"][-1]["content"][0]
    assert result["type"] == "tool_result"
    assert "history/plans/2026-10/2026-10-20.jsonl (2026-10-20)" in result["content"]
    assert "memory/projects.md" in result["content"]

    out = subprocess.run(
        [sys.executable, "-m", "anima", "memory", "search", "arya", "cedar greenhouse", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    hits = json.loads(out.stdout)
    assert hits[0]["path"] == "memory/projects.md" and "[cedar]" in hits[0]["snippet"]
    assert {h["kind"] for h in hits} == {"memory", "history"}


def test_index_is_incremental_and_rebuilt_from_scratch(home: Home) -> None:
    agent = make_agent(home)
    (agent.memory_dir / "a.md").write_text("alpha apples\n")
    assert search.refresh(agent.path) == 2  # a.md and MEMORY.md
    assert search.refresh(agent.path) == 0  # nothing changed, nothing re-read
    (agent.memory_dir / "a.md").write_text("beta bananas, ripe\n")
    assert search.refresh(agent.path) == 1
    assert not search.search(agent.path, "apples") and search.search(agent.path, "bananas")
    hist = agent.path / "history/c/2026-11-01.jsonl"
    hist.parent.mkdir(parents=True)

    def turn(tid: str, text: str) -> str:
        return json.dumps(
            {"role": "assistant", "turn": tid, "content": [{"type": "text", "text": text}]}
        )

    hist.write_text(turn("t1", "first turn about kayaks") + "\n")
    search.refresh(agent.path)
    with hist.open("a") as f:
        f.write(turn("t2", "second turn about kayaks") + "\n")
    search.refresh(agent.path)  # appended: only the new turn is indexed
    assert len(search.search(agent.path, "kayaks", limit=10)) == 2
    hist.write_text(turn("t9", "rewritten file about canoes, no more of the other craft") + "\n")
    search.refresh(agent.path)  # rewritten (an undo): indexed again from the start
    assert not search.search(agent.path, "kayaks") and search.search(agent.path, "canoes")
    (agent.path / search.INDEX).unlink()
    assert search.refresh(agent.path) == 3  # rebuilt from the files alone
    assert ".cache" not in git.Repo(agent.path).git.ls_files()


def test_people_note_is_updated_by_the_agent_and_injected_next_time(
    home: Home, fake: FakeModelServer
) -> None:
    agent: Agent = make_agent(home)
    note = "---\ndescription: Sam, neighbour\n---\nSam is my neighbour; allergic to cats.\n"
    fake.add(
        Reply(
            "",
            tool_calls=[
                {
                    "name": "memory",
                    "input": {
                        "command": "create",
                        "path": "people/sam.md",
                        "file_text": note,
                        "reason": "met Sam, who is allergic to cats",
                    },
                }
            ],
        ),
        Reply("Nice to meet you, Sam."),
    )
    send(agent, "Hi, I'm Sam from next door. Allergic to cats, sadly.", sender="sam")
    run_once(home)
    first = last_user_text("anthropic", fake.requests[0].body)
    assert '<person-note path="memory/people/sam.md">\n(no note yet' in first
    log = git.Repo(agent.path).git.log("-n1", "--format=%B")
    assert "created memory/people/sam.md: met Sam, who is allergic to cats" in log

    fake.add(Reply("Sure."))
    send(agent, "Can you recommend a pet?", sender="sam", conversation="pets")
    run_once(home)
    second = last_user_text("anthropic", fake.requests[-1].body)
    assert '<person-note path="memory/people/sam.md">' in second
    assert "allergic to cats" in second.split("</person-note>")[0]
    system = json.dumps(fake.requests[-1].body["system"], ensure_ascii=False)
    assert "- people/sam.md — Sam, neighbour" in system  # listed in the notes index too


def test_index_reads_only_regular_files_in_memory(home: Home) -> None:
    """A FIFO named like a note used to block the indexer (and every memory_search) forever;
    a symlink pulled another agent's private note into this agent's results."""
    import os
    import threading

    arya, other = make_agent(home), make_agent(home, "gendry")
    (other.memory_dir / "secret.md").write_text("the gendry vault code is swordfish\n")
    os.mkfifo(arya.memory_dir / "pipe.md")
    (arya.memory_dir / "borrowed.md").symlink_to(other.memory_dir / "secret.md")
    (arya.memory_dir / "tea.md").write_text("tea without sugar, swordfish aside\n")
    found: list[object] = []
    t = threading.Thread(
        target=lambda: found.extend(search.search(arya.path, "swordfish")), daemon=True
    )
    t.start()
    t.join(10)
    assert not t.is_alive(), "the indexer blocked on a FIFO"
    paths = [h.path for h in found]  # type: ignore[attr-defined]
    assert "memory/tea.md" in paths and not any("borrowed" in p or "pipe" in p for p in paths)


def test_a_word_in_most_of_a_long_history_neither_ranks_nor_slows_a_search(home: Home) -> None:
    """A word said in most turns tells nothing apart (bm25 gives it no weight) and ranking
    every turn it is in made searches of 100k turns slow: it is left out of the query, unless
    the query has nothing else."""
    agent = make_agent(home)
    hist = agent.path / "history/c/2026-11/2026-11-01.jsonl"
    hist.parent.mkdir(parents=True)
    lines = []
    for i in range(2500):
        text = f"hello again, turn {i}" + (" about the zebra crossing" if i == 1234 else "")
        rec = {"role": "assistant", "turn": f"t{i}", "content": [{"type": "text", "text": text}]}
        lines.append(json.dumps(rec) + "\n")
    hist.write_text("".join(lines))
    hits = search.search(agent.path, "hello zebra", limit=10)
    assert [h.snippet for h in hits] == ["hello again, turn 1234 about the [zebra] crossing"]
    assert len(search.search(agent.path, "hello", limit=10)) == 10
