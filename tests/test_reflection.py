"""The nightly reflection (issue 15): delivered once a day at `[reflection] at`, answered by a
turn in its own conversation that reads the day and consolidates memory, with reasons."""

from __future__ import annotations

import datetime as dt

import pytest
from click.testing import CliRunner

from anima import gitstore, history, mailbox, reflection
from anima.agent import Agent
from anima.cli import main
from anima.errors import BadConfig
from anima.home import Home
from anima.message import iso, utcnow
from anima.runtime import run_once
from anima.testing import FakeModelServer
from anima.testing.fake_model import Reply
from tests.conftest import LiveRuntime, make_agent, send, wait_for


def _reflecting(home: Home, at: str = "", tokens: int | None = None) -> Agent:
    agent = make_agent(home)
    path = agent.path / "agent.toml"
    text = path.read_text() + f'\n[reflection]\nat = "{at}"\n'
    if tokens is not None:
        text = text.replace("[budget]\n", f"[budget]\nreflection_tokens = {tokens}\n", 1)
    path.write_text(text)
    return agent


def _memory(name: str, path: str = "", reason: str = "", **args: str) -> Reply:
    call = {"command": name, "path": path, "reason": reason, **args}
    return Reply(tool_calls=[{"name": "memory", "input": call}])


def _reflections(agent: Agent) -> list[gitstore.LogEntry]:
    return [
        e
        for e in gitstore.log(agent.path, limit=50)
        if e.trailers.get("Anima-Conversation") == reflection.CONVERSATION
    ]


def test_a_reflection_merges_duplicate_notes_with_reasons_in_one_commit_of_its_own(
    home: Home, fake: FakeModelServer
) -> None:
    agent = _reflecting(home)
    (agent.memory_dir / "tea.md").write_text("---\ndescription: tea\n---\nTakes tea.\n")
    (agent.memory_dir / "drinks.md").write_text("---\ndescription: drinks\n---\nNo sugar.\n")
    fake.add(Reply("Noted: green tea, no sugar."))
    send(agent, "I drink green tea, never with sugar.")
    run_once(home, ["arya"])
    before = gitstore.log(agent.path, limit=None)

    out = CliRunner().invoke(main, ["--home", str(home.root), "reflect", "arya"])
    assert out.exit_code == 0, out.output
    assert "arya reflects on" in out.output and "anima run --once` answers it" in out.output
    fake.add(
        _memory("view", "drinks.md"),
        _memory(
            "str_replace",
            "tea.md",
            "merge drinks.md into tea.md: both are about how Ana takes her tea",
            old_str="Takes tea.",
            new_str="Takes green tea, no sugar.",
        ),
        _memory("delete", "drinks.md", "duplicate of tea.md, merged into it"),
        Reply("Merged the two tea notes into tea.md."),
    )
    [result] = run_once(home, ["arya"])

    after = gitstore.log(agent.path, limit=None)
    assert len(after) == len(before) + 1  # the whole reflection is one commit
    head = after[0]
    assert head.sha == result.commit and result.conversation == reflection.CONVERSATION
    assert head.trailers["Anima-Conversation"] == "reflection"
    assert "merge drinks.md into tea.md" in head.body
    assert "duplicate of tea.md, merged into it" in head.body
    assert not (agent.memory_dir / "drinks.md").exists()
    assert "green tea, no sugar" in (agent.memory_dir / "tea.md").read_text()
    assert history.day_files(agent.path, "reflection")  # its own thread
    # The model was shown the day: the earlier conversation, as a record, before the prompt.
    first = fake.requests[-4].body["messages"][-1]["content"]
    texts = [b["text"] for b in first if b.get("type") == "text"]
    day = next(t for t in texts if t.startswith("<day-record"))
    assert "never with sugar" in day and "conversation cli" in day
    assert any("Nightly reflection for" in t for t in texts[texts.index(day) :])


def test_the_days_record_is_cut_to_the_reflection_budget(home: Home) -> None:
    agent = _reflecting(home, tokens=4000)  # material: 4000 * 4 / 8 = 2000 characters
    now = utcnow()
    for conversation in ("cli", "plans"):
        history.append(
            history.day_file(agent.path, conversation, now.strftime("%Y-%m-%d")),
            [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": '<message from="you">\n' + "word " * 2000 + "\n</message>",
                        }
                    ],
                    "turn": conversation,
                    "ts": now.isoformat(),
                },
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "ok"}],
                    "turn": conversation,
                    "ts": now.isoformat(),
                },
            ],
        )
    record = reflection.material(agent, now - reflection.DAY, now + dt.timedelta(seconds=1), 2000)
    assert len(record) <= 2000
    assert "conversation cli" in record and "conversation plans" in record  # each gets a share
    assert record.count("[cut: ") == 2


def test_a_slot_set_to_this_minute_is_delivered_once_not_twice(home: Home) -> None:
    now = utcnow()
    agent = _reflecting(home, at=now.astimezone().strftime("%H:%M"))
    msg = reflection.fire(home, "arya", now)
    assert msg is not None and msg.conversation == "reflection" and msg.channel == "timer"
    assert reflection.is_reflection(msg)
    assert reflection.fire(home, "arya", now + dt.timedelta(seconds=30)) is None
    # Even with the runtime's state lost, the slot's id delivers it once.
    (home.run_dir / "reflections" / "arya").unlink()
    assert (
        reflection.deliver(
            home, "arya", now, scheduled=reflection.slot(agent.config.reflection, now)
        )
        is None
    )
    assert len(list(agent.inbox.glob("reflect-*.md"))) == 1


def test_a_new_agent_waits_for_its_next_slot_and_a_missed_one_comes_once_late(home: Home) -> None:
    agent = _reflecting(home, at="03:30")
    cfg = agent.config.reflection
    noon = dt.datetime.combine(dt.date(2026, 11, 29), dt.time(12, 0)).astimezone()
    assert reflection.fire(home, "arya", noon) is None  # first sight, hours after 03:30
    assert reflection.next_slot(cfg, noon) == reflection.slot(cfg, noon + reflection.DAY)
    three_days_later = noon + 3 * reflection.DAY  # the runtime was down meanwhile
    msg = reflection.fire(home, "arya", three_days_later)
    assert msg is not None and msg.id == "reflect-2026-12-01" and msg.extra["late"] is True
    # It reads back to the reflection before the downtime, not just the last day.
    assert msg.extra["since"] == iso(reflection.slot(cfg, noon))
    assert reflection.fire(home, "arya", three_days_later + dt.timedelta(hours=1)) is None


def test_a_live_runtime_delivers_a_missed_reflection_once_and_answers_it(
    home: Home, fake: FakeModelServer
) -> None:
    hour_ago = utcnow() - dt.timedelta(hours=1)
    agent = _reflecting(home, at=hour_ago.astimezone().strftime("%H:%M"))
    slot = reflection.slot(agent.config.reflection, utcnow())
    assert slot is not None
    (home.run_dir / "reflections").mkdir(parents=True, exist_ok=True)
    (home.run_dir / "reflections" / "arya").write_text((slot - reflection.DAY).isoformat())
    fake.add(Reply("Nothing needed merging today."))
    with LiveRuntime(home) as rt:
        wait_for(lambda: _reflections(agent), what="a reflection turn")
        assert "arya: reflection" in rt.output()
    [turn] = _reflections(agent)
    assert turn.trailers["Anima-Message"] == f"reflect-{reflection.day_of(slot)}"
    assert mailbox.archive_path(agent.path, f"reflect-{reflection.day_of(slot)}").exists()


def test_a_runaway_reflection_stops_at_its_token_budget_and_still_commits(
    home: Home, fake: FakeModelServer
) -> None:
    agent = _reflecting(home, tokens=1)  # less than one model call: it stops after the first
    reflection.deliver(home, "arya")
    fake.add(*[_memory("view", "MEMORY.md") for _ in range(agent.config.max_steps)])
    [result] = run_once(home, ["arya"])
    assert result.commit and result.conversation == "reflection"
    assert len(fake.requests) == 1  # not max_steps calls
    assert "[stopped: " in gitstore.log(agent.path, limit=1)[0].body


def test_a_reflection_commit_is_named_for_its_day(home: Home, fake: FakeModelServer) -> None:
    _reflecting(home)
    msg = reflection.deliver(home, "arya")
    assert msg is not None
    fake.add(Reply("NO_REPLY"))
    run_once(home, ["arya"])
    head = gitstore.log(home.agents_dir / "arya", limit=1)[0]
    assert head.subject == f"turn(arya): reflection for {msg.extra['reflection']}"


def test_a_mistyped_time_is_a_config_error_that_says_how_to_write_it(home: Home) -> None:
    _reflecting(home, at="half past three")
    with pytest.raises(BadConfig, match="use a local time 'HH:MM'"):
        reflection.fire(home, "arya", utcnow())


def test_status_says_when_the_next_reflection_comes(home: Home) -> None:
    from anima import status

    agent = make_agent(home, provider="offline")
    assert status.agent_status(home, agent.name)["next_reflection"] is None
    with open(agent.path / "agent.toml", "a") as fh:
        fh.write('\n[reflection]\nat = "03:30"\n')
    nxt = status.collect(home)["agents"][agent.name]["next_reflection"]
    when = dt.datetime.fromisoformat(nxt)
    assert when > dt.datetime.now(dt.UTC) and when.astimezone().strftime("%H:%M") == "03:30"
    # agent.toml changes again: the status cache must not keep the old time
    text = (agent.path / "agent.toml").read_text().replace('at = "03:30"', 'at = "04:45"')
    (agent.path / "agent.toml").write_text(text + "\n# edited\n")
    nxt = status.collect(home)["agents"][agent.name]["next_reflection"]
    assert dt.datetime.fromisoformat(nxt).astimezone().strftime("%H:%M") == "04:45"
