"""Budgets for self-started work ([autonomy] in agent.toml): heartbeats, reminders and other
agents' messages pause when one is used up; people are still answered; the owner is told once;
`anima status` shows it and `anima resume` lifts it. Real runtime, real git, fake model."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from anima import attempts, budget, gitstore, schedule
from anima.agent import Agent
from anima.cli import main
from anima.home import Home
from anima.message import Message
from anima.runtime import run_once
from anima.testing import FakeModelServer
from tests.conftest import LiveRuntime, make_agent, send, wait_for

T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


def with_autonomy(agent: Agent, **limits: int) -> Agent:
    """Set keys of the [autonomy] table in agent.toml (the template has one), as a person would."""
    path = agent.path / "agent.toml"
    text = path.read_text()
    header = re.search(r"(?m)^\[autonomy\][^\n]*\n", text)
    if header is None:
        text += "\n[autonomy]\n"
        header = re.search(r"(?m)^\[autonomy\][^\n]*\n", text)
    assert header is not None
    head, rest = text[: header.end()], text[header.end() :]
    for key, value in limits.items():
        rest, n = re.subn(rf"(?m)^{key} = [^\n#]*", f"{key} = {value} ", rest, count=1)
        if n == 0:
            rest = f"{key} = {value}\n" + rest
    path.write_text(head + rest)
    return Agent(agent.home, agent.name)


def heartbeat(home: Home, at: dt.datetime) -> Message:
    msg = schedule.tick(home, "arya", at, force=True)
    assert msg is not None
    return msg


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def pending(agent: Agent) -> list[str]:
    return sorted(p.stem for p in agent.inbox.glob("*.md"))


def notices(agent: Agent) -> list[gitstore.LogEntry]:
    return gitstore.log(agent.path, limit=None, grep="^budget(")


def owner_notes(agent: Agent) -> list[Path]:
    return [p for p in agent.outbox.rglob("*.md") if "anima resume arya" in p.read_text()]


def test_self_started_turns_pause_at_turns_per_hour_until_resume(home: Home) -> None:
    agent = with_autonomy(make_agent(home), turns_per_hour=2)
    for minute in (0, 1):
        heartbeat(home, T0 + dt.timedelta(minutes=minute))
        (r,) = run_once(home)
        assert r.commit and r.error is None
    held = heartbeat(home, T0 + dt.timedelta(minutes=2))
    assert run_once(home) == []  # held: no turn, no error, no attempt counted
    assert pending(agent) == [held.id]
    assert attempts.failures(home, "arya") == 0

    (note,) = notices(agent)  # the owner is told, in a commit of its own
    assert note.subject == "budget(arya): self-started work paused"
    assert "turns_per_hour = 2 reached (2 self-started turns in the last hour)" in note.body
    (path,) = owner_notes(agent)
    text = path.read_text()
    assert "to: you" in text and "channel: cli" in text and "conversation: cli" in text

    # A person is still answered; more self-started work waits; the owner is not told again.
    later = heartbeat(home, T0 + dt.timedelta(minutes=3))
    person = send(agent, "are you there?")
    (r,) = run_once(home)
    assert r.error is None and r.message_ids == [person.id] and r.reply is not None
    assert pending(agent) == sorted([held.id, later.id])
    assert len(notices(agent)) == 1 and len(owner_notes(agent)) == 1

    shown = cli("status")
    assert "arya: heartbeats, reminders and agent messages paused since" in shown.output
    assert "`anima resume arya` lifts it" in shown.output
    data = json.loads(cli("status", "--json").output)
    assert "turns_per_hour = 2 reached" in data["agents"]["arya"]["paused"]["reason"]

    out = cli("resume", "arya")
    assert out.exit_code == 0 and "resumed arya" in out.output
    (r,) = run_once(home)  # the held heartbeats, one batch
    assert r.commit and sorted(r.message_ids) == sorted([held.id, later.id])
    assert pending(agent) == []
    assert json.loads(cli("status", "--json").output)["agents"]["arya"]["paused"] is None
    assert "not paused" in cli("resume", "arya").output
    assert len(notices(agent)) == 1


def test_tokens_per_day_counts_the_tokens_the_turns_committed(home: Home) -> None:
    agent = with_autonomy(make_agent(home), tokens_per_day=500)
    make_agent(home, "gendry")
    first = send(agent, "hello arya", sender="gendry", channel="agent", conversation="gendry")
    (r,) = run_once(home, ["arya"])
    assert r.commit and r.message_ids == [first.id]
    trailers = gitstore.log(agent.path, limit=1, grep="^turn(")[0].trailers
    spent = int(trailers["Anima-Tokens-In"]) + int(trailers["Anima-Tokens-Out"])
    assert spent >= 500  # the fake model counts a request's characters / 4
    assert budget.usage(home, "arya") == {
        "turns_per_hour": 1,
        "turns_per_day": 1,
        "tokens_per_day": spent,
    }
    second = send(agent, "still there?", sender="gendry", channel="agent", conversation="gendry")
    assert run_once(home, ["arya"]) == []
    assert pending(agent) == [second.id]
    (note,) = notices(agent)
    assert f"tokens_per_day = 500 reached ({spent} tokens of self-started turns" in note.body


def test_windows_roll_a_turn_older_than_the_window_no_longer_counts(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = with_autonomy(make_agent(home), turns_per_hour=1)
    monkeypatch.setenv("ANIMA_NOW", T0.isoformat())
    heartbeat(home, T0)
    assert len(run_once(home)) == 1
    monkeypatch.setenv("ANIMA_NOW", (T0 + dt.timedelta(minutes=61)).isoformat())
    heartbeat(home, T0 + dt.timedelta(minutes=61))
    (r,) = run_once(home)  # an hour later the hour's budget is free again
    assert r.commit and pending(agent) == [] and notices(agent) == []
    assert budget.usage(home, "arya")["turns_per_day"] == 2


def test_a_persons_messages_never_count_and_mixed_batches_run(home: Home) -> None:
    agent = with_autonomy(make_agent(home), turns_per_hour=1)
    for text in ("one", "two", "three"):
        send(agent, text)
        assert len(run_once(home)) == 1
    assert budget.usage(home, "arya")["turns_per_hour"] == 0
    reminder = Message.create(
        sender="timer", to="arya", body="water the plants", channel="timer", kind="reminder"
    )
    assert budget.self_started([reminder])
    assert not budget.self_started([reminder, Message.create(sender="you", to="arya", body="x")])


def test_a_bad_autonomy_table_is_a_clear_error_and_loses_nothing(home: Home) -> None:
    agent = with_autonomy(make_agent(home), turns_per_hour=-1)
    hb = send(agent, "hello", sender="gendry", channel="agent", conversation="gendry")
    (r,) = run_once(home)
    assert r.error and "autonomy.turns_per_hour must be 0 (no limit) or more, not -1" in r.error
    assert pending(agent) == [hb.id] and attempts.failures(home, "arya") == 0


def test_the_budget_state_keeps_only_its_window_so_the_check_stays_cheap(home: Home) -> None:
    # The check reads and rewrites the state each self-started turn: it must not grow with the
    # agent's age. Turns older than the day-long window are dropped as the next one is counted.
    agent = with_autonomy(make_agent(home), turns_per_hour=0, turns_per_day=0)
    path = home.run_dir / "budgets" / f"{agent.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    two_days_ago = time.time() - 2 * 86400
    path.write_text(json.dumps({"turns": [[two_days_ago + i, 1000] for i in range(1000)]}))
    batch = [heartbeat(home, T0)]
    assert budget.admits(agent, batch)
    budget.record(agent, batch, 1000)
    assert len(json.loads(path.read_text())["turns"]) == 1


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_live_runtime_holds_self_started_work_without_spinning_and_resumes(
    home: Home, fake: FakeModelServer
) -> None:
    agent = with_autonomy(make_agent(home), turns_per_hour=1)
    with LiveRuntime(home) as rt:
        first = heartbeat(home, T0)
        wait_for(lambda: first.id not in pending(agent), what="the first heartbeat's turn")
        held = heartbeat(home, T0 + dt.timedelta(minutes=1))
        wait_for(lambda: notices(agent), what="the pause notice")
        requests = len(fake.requests)
        assert rt.proc is not None
        checked = agent.path / ".git" / "anima-checked"  # touched by every pass over arya
        before, stamp = cpu_seconds(rt.proc.pid), checked.stat().st_mtime_ns
        time.sleep(1.0)
        # Paused is not failing: nothing re-wakes arya until something new arrives.
        assert checked.stat().st_mtime_ns == stamp
        assert cpu_seconds(rt.proc.pid) - before < 0.5
        assert pending(agent) == [held.id] and len(fake.requests) == requests

        person = send(agent, "hello?")
        wait_for(lambda: person.id not in pending(agent), what="the person's turn")
        assert pending(agent) == [held.id]

        assert cli("resume", "arya").exit_code == 0
        wait_for(lambda: pending(agent) == [], what="the held heartbeat's turn")
        assert rt.stop() == 0
    assert len(notices(agent)) == 1
    subjects = [e.subject for e in gitstore.log(agent.path, limit=None, grep="^turn(")]
    assert subjects.count("turn(arya): heartbeat") == 2
