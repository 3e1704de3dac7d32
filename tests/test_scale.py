"""Many agents (issue 13): what the runtime keeps instead of looking at every agent each time
(the agent list, one timer heap, the status cache) still sees every change."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from pathlib import Path

import git

from anima import gitstore, schedule, status
from anima.agent import Agent, create_agent
from anima.home import Home
from anima.runtime import Timers, run_once
from tests.conftest import LiveRuntime, make_agent, replies, send, wait_for


def _settled(path: Path) -> None:
    """Make `path` look changed long ago, as it is in a home that runs for days: a listing
    taken now is kept (one taken within RACY_SECONDS of a change never is)."""
    old = time.time() - 60
    os.utime(path, (old, old))


def test_the_agent_list_sees_agents_made_removed_renamed_and_finished(home: Home) -> None:
    create_agent(home, "arya")
    create_agent(home, "bran")
    _settled(home.agents_dir)
    assert home.agent_names() == ["arya", "bran"]  # kept from here on
    create_agent(home, "cersei")
    assert home.agent_names() == ["arya", "bran", "cersei"]
    _settled(home.agents_dir)
    home.agent_names()
    (home.agents_dir / "bran").rename(home.agents_dir / "brienne")  # by hand
    assert home.agent_names() == ["arya", "brienne", "cersei"]
    _settled(home.agents_dir)
    home.agent_names()
    shutil.move(home.agents_dir / "arya", home.root / "arya-gone")
    assert home.agent_names() == ["brienne", "cersei"]
    (home.agents_dir / "dany").mkdir()  # a folder that becomes an agent later
    _settled(home.agents_dir)
    assert home.agent_names() == ["brienne", "cersei"]
    (home.agents_dir / "dany" / "agent.toml").write_text("")
    assert home.agent_names() == ["brienne", "cersei", "dany"]


def test_timers_take_the_earliest_and_a_later_setting_supersedes() -> None:
    timers = Timers()
    timers.set("a999", 5.0)
    timers.set("a001", 3.0)
    timers.set("a999", 1.0)  # rescheduled sooner: the entry at 5.0 no longer counts
    timers.set("a500", 4.0)
    timers.drop("a500")
    assert "a999" in timers and "a500" not in timers
    assert timers.next() == 1.0
    assert timers.due(2.0) == ["a999"]
    assert timers.due(10.0) == ["a001"]
    assert timers.next() is None and timers.due(100.0) == []


def test_next_wake_is_the_sooner_of_reminder_and_heartbeat(home: Home) -> None:
    agent = make_agent(home, provider="offline")
    now = dt.datetime(2026, 11, 30, 10, 7, 0, tzinfo=dt.UTC)
    assert schedule.next_wake(home, "arya", now) is None  # nothing scheduled: no timer
    text = (agent.path / "agent.toml").read_text().replace('every = ""', 'every = "30m"', 1)
    (agent.path / "agent.toml").write_text(text)
    assert schedule.next_wake(home, "arya", now) == dt.datetime(2026, 11, 30, 10, 30, tzinfo=dt.UTC)
    (agent.path / "reminders").mkdir()
    (agent.path / "reminders" / "r1.toml").write_text(
        f'text = "tea"\nat = "2026-11-30T10:12:00Z"\ncreated = "{now.isoformat()}"\n'
    )
    assert schedule.next_wake(home, "arya", now) == dt.datetime(2026, 11, 30, 10, 12, tzinfo=dt.UTC)


def _agents(home: Home, n: int) -> list[str]:
    names = [f"a{i:03d}" for i in range(n)]
    for name in names:
        make_agent(home, name, provider="offline")
    return names


def test_a_reminder_written_by_hand_for_the_last_agent_fires_while_live(home: Home) -> None:
    *_, last = _agents(home, 6)
    agent_dir = home.agents_dir / last
    with LiveRuntime(home) as rt:
        at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        (agent_dir / "reminders").mkdir()
        (agent_dir / "reminders" / "tea.toml").write_text(
            f'text = "put the kettle on"\nat = "{at.isoformat()}"\n'
            f'created = "{dt.datetime.now(dt.UTC).isoformat()}"\n'
        )
        wait_for(
            lambda: any(e.subject.endswith("reminder") for e in gitstore.log(agent_dir, limit=3)),
            what="the reminder's turn",
        )
        rt.stop()
    assert "firing reminders or heartbeat failed" not in rt.output()


def test_agents_made_renamed_and_removed_while_live_are_seen(home: Home) -> None:
    make_agent(home, "arya", provider="offline")
    make_agent(home, "bran", provider="offline")
    with LiveRuntime(home) as rt:
        (home.agents_dir / "bran").rename(home.agents_dir / "brienne")  # by hand, while live
        shutil.move(home.agents_dir / "arya", home.root / "arya-gone")
        sansa = make_agent(home, "sansa", provider="offline")
        send(sansa, "tell all: dinner at eight")
        wait_for(lambda: replies(sansa), what="sansa's reply")
        wait_for(
            lambda: list((home.agents_dir / "brienne" / "archive").rglob("*.md")),
            what="brienne's copy of the message to all",
        )
        rt.stop()
    assert not (home.agents_dir / "arya").exists()  # nothing was delivered to the removed one
    output = rt.output()
    assert "Traceback" not in output and "failed" not in output, output


def test_run_once_opens_only_agents_with_work(home: Home) -> None:
    names = _agents(home, 3)
    idle = home.agents_dir / names[0]
    (idle / "persona.md").write_text("Edited by hand, waiting for the agent's next turn.\n")
    head = gitstore.head(idle)
    busy = home.agents_dir / names[2]
    send(Agent(home, names[2]), "hello")
    (result,) = run_once(home)
    assert result.agent == names[2] and result.commit
    assert gitstore.head(idle) == head  # not opened: its hand edit waits for its next turn
    assert git.Repo(idle).is_dirty()
    assert gitstore.head(busy) == result.commit


def test_status_sees_a_new_turn_and_an_edited_heartbeat_through_its_cache(home: Home) -> None:
    agent = make_agent(home, provider="offline")
    _settled(agent.path / "agent.toml")
    before = status.collect(home)["agents"]["arya"]  # kept in run/status-cache.json
    assert before["last_turn"] is None and before["next_heartbeat"] is None
    send(agent, "hello")
    run_once(home)
    assert (
        status.collect(home)["agents"]["arya"]["last_turn"]["commit"]
        == (gitstore.head(agent.path)[:8])
    )
    text = (agent.path / "agent.toml").read_text().replace('every = ""', 'every = "30m"', 1)
    (agent.path / "agent.toml").write_text(text)
    _settled(agent.path / "agent.toml")
    assert status.collect(home)["agents"]["arya"]["heartbeat_driver"].startswith("none")


def test_status_of_a_crowd_lists_only_the_agents_with_something_to_say(home: Home) -> None:
    from click.testing import CliRunner

    from anima.cli import main

    first = make_agent(home, "a00", provider="offline")
    for i in range(1, 60):
        shutil.copytree(first.path, home.agents_dir / f"a{i:02d}", symlinks=True)
    send(Agent(home, "a42"), "are you there?")
    out = CliRunner().invoke(main, ["--home", str(home.root), "status"], terminal_width=200).output
    assert "60 agents; 1 with messages waiting" in out
    assert "a42" in out and "a41" not in out and "a00" not in out
    data = CliRunner().invoke(main, ["--home", str(home.root), "status", "--json"]).output
    assert '"a00"' in data  # --json still has all of them
