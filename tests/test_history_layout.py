"""History is sharded by month (history/<conversation>/YYYY-MM/YYYY-MM-DD.jsonl), and homes
written by older versions, with flat day files, keep working: nothing is moved or lost, and
every reader (the context window, recent turns, compaction, search) sees both layouts."""

from __future__ import annotations

import json
import subprocess

import pytest

from anima import gitstore, history, search
from anima.agent import Agent
from anima.home import Home
from anima.runtime import run_once
from anima.testing import FakeModelServer, Reply
from tests.conftest import make_agent, send


def said(turns: list[list[dict[str, object]]]) -> list[str]:
    """The user text of each turn, in the order given."""
    out = []
    for turn in turns:
        text = turn[0]["content"][0]["text"]  # type: ignore[index]
        out.append(next(w for w in str(text).split() if w.startswith("msg")))
    return out


def flat_turn(tid: str, text: str, ts: str) -> str:
    """A turn as an older version wrote it into history/<conversation>/YYYY-MM-DD.jsonl."""
    text = f'<message id="{tid}" from="you" channel="cli">\n{text}\n</message>'
    recs = [
        {"role": "user", "turn": tid, "ts": ts, "content": [{"type": "text", "text": text}]},
        {"role": "assistant", "turn": tid, "ts": ts, "content": [{"type": "text", "text": "ok"}]},
    ]
    return "".join(json.dumps(r) + "\n" for r in recs)


def test_turns_are_written_in_month_directories_and_read_back_in_order_across_months(
    home: Home, fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = make_agent(home)
    days = ["2026-10-30", "2026-10-31", "2026-11-02", "2027-01-05"]
    for i, day in enumerate(days):
        monkeypatch.setenv("ANIMA_NOW", f"{day}T09:00:00+00:00")
        send(agent, f"msg{i} about the canal boat")
        fake.add(Reply(f"answer {i}"))
        run_once(home)
    stat = subprocess.run(
        ["git", "show", "--name-only", "--format=", "HEAD"],
        cwd=agent.path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "history/cli/2027-01/2027-01-05.jsonl" in stat
    assert sorted(p.name for p in (agent.path / "history/cli").iterdir()) == [
        "2026-10",
        "2026-11",
        "2027-01",
    ]
    assert said(history.recent(agent.path, "cli", 10)) == ["msg0", "msg1", "msg2", "msg3"]
    assert said(history.recent(agent.path, "cli", 2)) == ["msg2", "msg3"]
    assert [p.name for p in history.day_files(agent.path, "cli")] == [f"{d}.jsonl" for d in days]


def test_an_old_flat_history_keeps_working_beside_the_new_layout(
    home: Home, fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An existing home has flat day files; after the upgrade, turns of the same day and of
    later days go to month directories. Both are read in order, searched, and kept as they were."""
    agent: Agent = make_agent(home)
    flat = {
        "2026-10-31": flat_turn("t1", "msg0 the lighthouse keeper", "2026-10-31T08:00:00Z"),
        "2026-11-02": flat_turn("t2", "msg1 the harbour wall", "2026-11-02T08:00:00Z"),
    }
    for day, text in flat.items():
        (agent.path / "history/cli").mkdir(parents=True, exist_ok=True)
        (agent.path / f"history/cli/{day}.jsonl").write_text(text)
    gitstore.commit(agent.path, "old turns", paths=[f"history/cli/{d}.jsonl" for d in flat])

    for i, day in ((2, "2026-11-02"), (3, "2026-11-04")):  # the upgrade day, then a later one
        monkeypatch.setenv("ANIMA_NOW", f"{day}T10:00:00+00:00")
        send(agent, f"msg{i} the tide tables")
        fake.add(Reply("noted"))
        run_once(home)

    assert said(history.recent(agent.path, "cli", 10)) == ["msg0", "msg1", "msg2", "msg3"]
    window = history.window(agent.path, "cli", 100_000)
    assert [m["role"] for m in window.messages][:2] == ["user", "assistant"]
    assert not window.truncated and "lighthouse" in json.dumps(window.messages[0])
    after_t1 = history.live_turns(agent.path, "cli", after_turn="t1")
    assert said([t for t, _ in after_t1]) == ["msg1", "msg2", "msg3"]
    for day, text in flat.items():  # nothing moved or rewritten
        assert (agent.path / f"history/cli/{day}.jsonl").read_text() == text
    assert (agent.path / "history/cli/2026-11/2026-11-02.jsonl").is_file()

    search.refresh(agent.path, rebuild=True)
    paths = {h.path for h in search.search(agent.path, "lighthouse tide", limit=10)}
    assert paths == {
        "history/cli/2026-10-31.jsonl",
        "history/cli/2026-11/2026-11-02.jsonl",
        "history/cli/2026-11/2026-11-04.jsonl",
    }
    hit = search.search(agent.path, "tide", limit=1)[0]
    assert hit.title == "cli" and hit.date.startswith("2026-11-0")
