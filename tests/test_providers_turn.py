"""Full turns through the real anthropic and ollama SDKs against the fake model server."""

from __future__ import annotations

import json
import time

import git
import pytest

from anima import gitstore, history
from anima.home import Home
from anima.runtime import run_once
from anima.testing import FakeModelServer, Fault, Reply
from anima.turn import TextDelta
from tests.conftest import make_agent, send

TRAILERS = (
    "Anima-Trigger",
    "Anima-Message",
    "Anima-Model",
    "Anima-Tokens-In",
    "Anima-Tokens-Out",
    "Anima-Tool-Calls",
    "Anima-Duration-Ms",
)


@pytest.mark.parametrize("provider", ["anthropic", "ollama"])
def test_full_turn_streams_and_commits_once(
    home: Home, fake: FakeModelServer, provider: str
) -> None:
    agent = make_agent(home, provider=provider)
    msg = send(agent, "Hello, who are you?")
    fake.add(Reply("I am arya, streaming in small pieces.", chunk=5))
    deltas: list[str] = []
    before = len(gitstore.log(agent.path, limit=None))

    (result,) = run_once(
        home, on_event=lambda m, ev: deltas.append(ev.text) if isinstance(ev, TextDelta) else None
    )

    assert result.error is None
    assert len(deltas) >= 5 and "".join(deltas) == "I am arya, streaming in small pieces."
    assert result.reply is not None and result.reply.body == "I am arya, streaming in small pieces."
    log = gitstore.log(agent.path, limit=None)
    assert len(log) == before + 2  # the external commit of our agent.toml edit, then the turn
    assert log[1].subject.startswith("external: hand edits to agent.toml")
    turn = log[0]
    assert turn.subject == "turn(arya): reply to cli message from you"
    assert all(k in turn.trailers for k in TRAILERS)
    assert turn.trailers["Anima-Message"] == msg.id
    assert turn.trailers["Anima-Model"].startswith(f"{provider}/")
    assert int(turn.trailers["Anima-Tokens-In"]) > 0
    repo = git.Repo(agent.path)
    assert not repo.is_dirty(untracked_files=True)
    assert not list(agent.inbox.glob("*.md"))
    changed = set(repo.git.show("--name-only", "--format=", "HEAD").split())
    assert f"archive/{msg.id[:4]}-{msg.id[4:6]}/{msg.id}.md" in changed
    assert any(p.startswith("outbox/") for p in changed)
    assert any(p.startswith("history/cli/") for p in changed)
    (req,) = fake.requests
    assert req.body["stream"] is True


def test_anthropic_request_layout_and_prompt_caching(home: Home, fake: FakeModelServer) -> None:
    agent = make_agent(home)
    (agent.path / "always.md").write_text("ALWAYS-REMINDER-LAST\n")
    home.always_path.write_text("GLOBAL-ALWAYS\n")
    send(agent, "hi")
    run_once(home)
    body = fake.requests[0].body
    system = body["system"]
    assert system[0]["text"].startswith("# arya")
    assert "GLOBAL-ALWAYS" in system[1]["text"]
    assert "memory/MEMORY.md" in system[2]["text"]
    assert system[-1]["cache_control"] == {"type": "ephemeral"}
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    last_blocks = body["messages"][-1]["content"]
    assert "hi" in last_blocks[0]["text"]
    assert last_blocks[-1]["text"] == "<always>\nALWAYS-REMINDER-LAST\n</always>"
    headers = fake.requests[0].headers
    assert "test-key" in (headers.get("x-api-key", ""), headers.get("authorization", "")[7:])


def test_two_step_tool_loop_keeps_exact_pairs_and_replays_them(
    home: Home, fake: FakeModelServer
) -> None:
    agent = make_agent(home)
    fake.add(
        Reply(
            "Writing.",
            tool_calls=[
                {"name": "write_file", "input": {"path": "notes/a.txt", "content": "alpha"}}
            ],
        ),
        Reply("", tool_calls=[{"name": "read_file", "input": {"path": "notes/a.txt"}}]),
        Reply("The file says alpha."),
    )
    send(agent, "write alpha to a file and read it back")
    (r1,) = run_once(home)
    assert r1.error is None and r1.tool_calls == 2
    assert (agent.workspace / "notes/a.txt").read_text() == "alpha"
    (hist,) = history.day_files(agent.path, "cli")
    lines = [json.loads(x) for x in hist.read_text().splitlines()]
    assert [m["role"] for m in lines] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    uses = [b for m in lines for b in m["content"] if b["type"] == "tool_use"]
    results = [b for m in lines for b in m["content"] if b["type"] == "tool_result"]
    assert [u["id"] for u in uses] == [r["tool_use_id"] for r in results]
    assert "alpha" in results[1]["content"] and results[1]["is_error"] is False
    assert "notes/a.txt" in git.Repo(agent.path).git.show("--name-only", "HEAD")

    # The next turn sees the previous one, pairs intact, ids matching.
    fake.add(Reply("I remember."))
    send(agent, "what did you do?")
    run_once(home)
    msgs = fake.requests[-1].body["messages"]
    assert [m["role"] for m in msgs] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    replay_uses = [b["id"] for m in msgs for b in m["content"] if b["type"] == "tool_use"]
    replay_results = [
        b["tool_use_id"] for m in msgs for b in m["content"] if b["type"] == "tool_result"
    ]
    assert replay_uses == replay_results == [u["id"] for u in uses]


def test_ollama_replays_tool_results_with_tool_names(home: Home, fake: FakeModelServer) -> None:
    agent = make_agent(home, provider="ollama")
    fake.add(Reply("", tool_calls=[{"name": "list_files", "input": {}}]), Reply("Empty."))
    send(agent, "list files")
    (r,) = run_once(home)
    assert r.error is None
    second = fake.requests[1].body["messages"]
    assert second[0]["role"] == "system"
    assert second[-2]["tool_calls"][0]["function"]["name"] == "list_files"
    assert second[-1] == {"role": "tool", "content": "(empty)", "tool_name": "list_files"}


def test_provider_fault_leaves_message_pending_then_later_run_answers(
    home: Home, fake: FakeModelServer
) -> None:
    agent = make_agent(home)
    fake.add(
        Reply(
            "", tool_calls=[{"name": "write_file", "input": {"path": "half.txt", "content": "x"}}]
        ),
        *[Reply(fault=Fault(status=500))] * 3,  # the second call fails past its 2 retries
    )
    msg = send(agent, "do something")
    (failed,) = run_once(home)
    assert failed.error and "500" in failed.error
    assert (agent.inbox / f"{msg.id}.md").exists()
    assert not (agent.workspace / "half.txt").exists()  # the abandoned turn's edits are undone
    assert gitstore.log(agent.path, limit=1)[0].subject.startswith("external:")
    assert not git.Repo(agent.path).is_dirty(untracked_files=True)

    fake.add(Reply("Now it works."))
    (ok,) = run_once(home)
    assert ok.error is None and ok.reply and ok.reply.body == "Now it works."
    assert ok.message_ids == [msg.id]
    assert run_once(home) == []  # answered exactly once
    outbox = list(agent.outbox.rglob("*.md"))
    assert len(outbox) == 1


def test_retry_after_is_respected(home: Home, fake: FakeModelServer) -> None:
    agent = make_agent(home)
    fake.add(Reply(fault=Fault(status=429, retry_after=0.4)), Reply("after the wait"))
    send(agent, "hi")
    (r,) = run_once(home)
    assert r.error is None and r.reply and r.reply.body == "after the wait"
    first, second = fake.requests
    assert second.at - first.at >= 0.4


@pytest.mark.parametrize("provider", ["anthropic", "ollama"])
def test_cut_stream_is_retried_and_partial_text_discarded(
    home: Home, fake: FakeModelServer, provider: str
) -> None:
    agent = make_agent(home, provider=provider)
    fake.add(Reply("partial text that is cut", fault=Fault(cut=True)), Reply("whole reply"))
    send(agent, "hi")
    (r,) = run_once(home)
    assert r.error is None and r.reply and r.reply.body == "whole reply"
    assert len(fake.requests) == 2


def test_fallback_provider_answers_when_primary_fails(home: Home, fake: FakeModelServer) -> None:
    agent = make_agent(home, fallback=["offline"])
    fake.add(*[Reply(fault=Fault(status=503))] * 3)
    send(agent, "hello")
    (r,) = run_once(home)
    assert r.error is None and r.model.startswith("offline/")
    assert r.reply and "[offline model]" in r.reply.body


def test_slow_model_times_out_and_message_stays(home: Home, fake: FakeModelServer) -> None:
    from tests.conftest import write_global_config

    write_global_config(home, fake.url, timeout=0.3, retries=0)
    agent = make_agent(home)
    fake.add(Reply("late", fault=Fault(delay=1.0)))
    msg = send(agent, "hi")
    t0 = time.monotonic()
    (r,) = run_once(home)
    assert r.error and time.monotonic() - t0 < 1.0
    assert (agent.inbox / f"{msg.id}.md").exists()


def test_auto_provider_uses_offline_without_key_or_ollama(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import write_global_config

    monkeypatch.delenv("ANTHROPIC_API_KEY")
    write_global_config(home, "http://127.0.0.1:9")  # nothing listens on the discard port
    agent = make_agent(home, provider="auto")
    send(agent, "hello")
    (r,) = run_once(home)
    assert r.model == "offline/offline-1"


def test_auto_provider_prefers_reachable_ollama(
    home: Home, fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    agent = make_agent(home, provider="auto")
    send(agent, "hello")
    (r,) = run_once(home)
    assert r.model.startswith("ollama/")
    assert fake.requests[0].path == "/api/chat"


def test_step_cap_ends_runaway_tool_loop_with_pairs_intact(
    home: Home, fake: FakeModelServer
) -> None:
    agent = make_agent(home, max_steps=3)
    fake.add(*[Reply("", tool_calls=[{"name": "list_files", "input": {}}])] * 5)
    send(agent, "loop forever")
    (r,) = run_once(home)
    assert r.error is None and len(fake.requests) == 3
    assert r.reply and "limit of 3 model calls" in r.reply.body
    (hist,) = history.day_files(agent.path, "cli")
    lines = [json.loads(x) for x in hist.read_text().splitlines()]
    assert lines[-1]["role"] == "assistant"
    uses = [b["id"] for m in lines for b in m["content"] if b["type"] == "tool_use"]
    results = [b["tool_use_id"] for m in lines for b in m["content"] if b["type"] == "tool_result"]
    assert uses == results and len(uses) == 3
