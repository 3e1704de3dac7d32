"""Compaction: a long conversation stays inside its budget, the journal gets the summaries, the
memory gets what the flush step saved, and no message leaves the history files or git."""

from __future__ import annotations

import json
import re
from typing import Any

import git
import pytest

from anima import compaction, history
from anima.agent import Agent
from anima.home import Home
from anima.runtime import run_once
from anima.testing import FakeModelServer, Reply
from anima.testing.fake_model import last_user_text
from tests.conftest import make_agent, send

NUM = re.compile(r"message number (\d+)")


def set_budget(agent: Agent, **values: int) -> None:
    path = agent.path / "agent.toml"
    text = path.read_text()
    for key, value in values.items():
        text = re.sub(rf"(?m)^{key} = \d+", f"{key} = {value}", text)
    path.write_text(text)


def scripted_model(flush_tool: dict[str, Any] | None = None):
    """Plays the model: the flush step says done (or saves `flush_tool` once), the summary step
    names the turns it saw, a turn answers the message number it was sent."""
    pending = [flush_tool] if flush_tool else []

    def respond(api: str, body: dict[str, Any]) -> Reply:
        text = last_user_text(api, body)
        if compaction.FLUSH in text:
            return Reply("", tool_calls=[pending.pop()]) if pending else Reply("done")
        if compaction.SUMMARY in text:
            nums = NUM.findall(text)
            return Reply(f"- the person sent messages {nums[0]} to {nums[-1]}")
        bodies = history.MESSAGE_BODY.findall(text)
        found = NUM.findall(bodies[-1][1]) if bodies else []
        return Reply(f"reply {found[-1]}" if found else "ok")

    return respond


def talk(home: Home, agent: Agent, numbers: range) -> None:
    """One turn per numbered message, each padded to about 50 tokens."""
    for i in numbers:
        send(agent, f"message number {i} " + "pad " * 40)
        run_once(home)


def all_user_bodies(agent: Agent, conversation: str) -> list[str]:
    out = []
    for f in history.day_files(agent.path, conversation):
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            for b in rec["content"]:
                if rec["role"] == "user" and b["type"] == "text":
                    out += [body for _, body in history.MESSAGE_BODY.findall(b["text"])]
    return out


def test_500_turns_stay_under_budget_with_journal_summaries_and_no_loss(
    home: Home, fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = 1500  # tokens of history: ~20 turns of this size
    fake.responder = scripted_model()
    agent = make_agent(home)
    set_budget(agent, history_tokens=budget)
    for i in range(500):
        monkeypatch.setenv(
            "ANIMA_NOW",
            f"2026-11-{1 + i // 200:02d}T{8 + i % 200 // 20:02d}:{i % 20 * 3:02d}:00+00:00",
        )
        send(agent, f"message number {i} " + "words to fill the turn " * 6)
        run = run_once(home)
        assert not any(r.error for r in run), run
    requests = list(fake.requests)

    turns = [
        r
        for r in requests
        if compaction.FLUSH not in last_user_text("anthropic", r.body)
        and compaction.SUMMARY not in last_user_text("anthropic", r.body)
    ]
    assert len(turns) == 500
    # Every request's history part fits the budget (plus the rolling summary, bounded on its own).
    for r in turns:
        past = r.body["messages"][:-1]
        tokens = sum(history.estimate_tokens(m["content"]) for m in past)
        assert tokens <= budget + compaction.SUMMARY_CHARS // history.CHARS_PER_TOKEN + 100
    # The newest turns are live, the last request answered the last message.
    assert "message number 498" in json.dumps(turns[-1].body["messages"][:-1])
    # Journal summaries, one commit per compaction, each after a checkpoint.
    journal = sorted((agent.memory_dir / "journal").glob("*.md"))
    assert [p.name for p in journal][:3] == ["2026-11-01.md", "2026-11-02.md", "2026-11-03.md"]
    text = "".join(p.read_text() for p in journal)
    assert text.count("## ") >= 20 and "the person sent messages 0 to" in text
    subjects = git.Repo(agent.path).git.log("--format=%s").splitlines()
    compacts = [s for s in subjects if s.startswith("compact(arya)")]
    checkpoints = [s for s in subjects if s.startswith("checkpoint(arya)")]
    assert len(compacts) == len(checkpoints) >= 20
    after = [subjects[k + 1] for k, s in enumerate(subjects) if s.startswith("compact(arya)")]
    assert all(s.startswith("checkpoint(arya)") for s in after)  # each right after its checkpoint
    # Nothing lost: every message is in the history files, in order, and committed.
    bodies = all_user_bodies(agent, "cli")
    assert [int(NUM.search(b).group(1)) for b in bodies] == list(range(500))
    assert not git.Repo(agent.path).is_dirty(untracked_files=True)
    # The earlier conversation is stood in for by the rolling summary in context.
    assert "<earlier-conversation" in json.dumps(turns[-1].body["messages"][0])


def test_flush_step_saves_durable_facts_before_turns_leave_context(
    home: Home, fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    save = {
        "name": "memory",
        "input": {
            "command": "create",
            "path": "people/you.md",
            "file_text": "Owner: plays the cello on Tuesdays.\n",
            "reason": "durable fact before compaction: cello on Tuesdays",
        },
    }
    fake.responder = scripted_model(save)
    agent = make_agent(home)
    set_budget(agent, history_tokens=400)
    send(agent, "message number 0: I play the cello every Tuesday. " + "pad " * 40)
    run_once(home)
    talk(home, agent, range(1, 6))
    flushes = [r for r in fake.requests if compaction.FLUSH in last_user_text("anthropic", r.body)]
    assert flushes and "cello every Tuesday" in last_user_text("anthropic", flushes[0].body)
    assert [t["name"] for t in flushes[0].body["tools"]] == ["memory"]  # only memory, silently
    assert (agent.memory_dir / "people/you.md").read_text().startswith("Owner: plays the cello")
    log = git.Repo(agent.path).git.log("--format=%B", "--grep=^compact(arya)")
    assert "created memory/people/you.md: durable fact before compaction: cello on Tuesdays" in log
    # Silent: no reply went out for the flush or the summary steps.
    assert len(list(agent.outbox.rglob("*.md"))) == 6


def test_context_overflow_compacts_and_retries_once(home: Home, fake: FakeModelServer) -> None:
    # The budget thinks 12000 tokens fit; the model's window is far smaller.
    fake.responder = scripted_model()
    fake.context_chars = 14000
    agent = make_agent(home)
    for i in range(8):
        send(agent, f"message number {i} " + "long words here " * 60)
        run = run_once(home)
        assert not any(r.error for r in run), run
    overflowed = [r for r in fake.requests if len(json.dumps(r.body)) > 14000]
    assert overflowed, "the emulated window was never hit: the test proves nothing"
    subjects = git.Repo(agent.path).git.log("--format=%s").splitlines()
    assert any(s.startswith("compact(arya)") for s in subjects)
    replies = sorted(agent.outbox.rglob("*.md"))
    assert len(replies) == 8
    assert "reply 7" in replies[-1].read_text() or any("reply 7" in p.read_text() for p in replies)


def test_overflow_that_compaction_cannot_fix_fails_the_turn_and_keeps_the_message(
    home: Home, fake: FakeModelServer
) -> None:
    fake.responder = scripted_model()
    fake.context_chars = 3000
    agent = make_agent(home)
    msg = send(agent, "message number 0 " + "far too long " * 400)
    run = run_once(home)
    assert run[0].error and "prompt is too long" in run[0].error
    assert (agent.inbox / f"{msg.id}.md").exists()  # pending, to be retried or rejected later
    assert not git.Repo(agent.path).is_dirty(untracked_files=True)


def test_live_window_is_the_summary_then_the_newest_whole_turns(
    home: Home, fake: FakeModelServer
) -> None:
    fake.responder = scripted_model()
    agent = make_agent(home)
    set_budget(agent, history_tokens=300)
    talk(home, agent, range(6))
    msgs = fake.requests[-1].body["messages"]
    assert msgs[0]["content"][0]["text"].startswith("<earlier-conversation")
    assert "the person sent messages 0 to" in msgs[0]["content"][0]["text"]
    assert msgs[-2]["content"][0]["text"] == "reply 4"  # the newest turn before this one
    assert "message number 5" in msgs[-1]["content"][1]["text"]
    assert msgs[0]["role"] == "user" and all(
        a["role"] != b["role"] for a, b in zip(msgs, msgs[1:], strict=False)
    )
    state = history.compaction(agent.path, "cli")
    assert state.count >= 1 and state.through_turn
    assert (agent.path / "history/cli/compaction.json").exists()


def test_crash_during_compaction_is_rolled_back_and_redone(
    home: Home, fake: FakeModelServer
) -> None:
    """A killed compaction leaves its write-ahead record `running`: recovery drops its edits."""
    from anima import turnlog

    fake.responder = scripted_model()
    agent = make_agent(home)
    set_budget(agent, history_tokens=300)
    talk(home, agent, range(3))
    head = git.Repo(agent.path).head.commit.hexsha
    journal = turnlog.begin(agent.path)  # as compact() does, naming what it will write
    journal.update(["memory/journal/2026-11-24.md", "history/cli/compaction.json"])
    (agent.memory_dir / "journal").mkdir(exist_ok=True)
    (agent.memory_dir / "journal/2026-11-24.md").write_text("half a summary")
    history.save_compaction(agent.path, "cli", history.Compaction("bogus", "half", 9))
    send(agent, "message number 3 " + "pad " * 40)
    run_once(home)
    assert history.compaction(agent.path, "cli").through_turn != "bogus"
    assert "half a summary" not in "".join(
        p.read_text() for p in (agent.memory_dir / "journal").glob("*.md")
    )
    assert git.Repo(agent.path).head.commit.hexsha != head
    assert not git.Repo(agent.path).is_dirty(untracked_files=True)


def test_offline_model_compacts_by_rule(home: Home) -> None:
    """The no-key default compacts too: its journal summary quotes who said what."""
    agent = make_agent(home, provider="offline")
    set_budget(agent, history_tokens=300)
    talk(home, agent, range(6))
    journal = "".join(p.read_text() for p in (agent.memory_dir / "journal").glob("*.md"))
    assert "summary by rule" in journal and "- you: message number 0 pad" in journal
