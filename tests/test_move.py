"""`anima move`: an agent handed from one home to another, with both runtimes running, and a
move killed (SIGKILL) at each step of the hand-over leaving exactly one host able to run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from anima import lease, remotes
from anima.agent import Agent, create_agent
from anima.home import Home
from anima.message import Message
from anima.runtime import run_once
from tests.conftest import replies, send, wait_for
from tests.test_remotes import Runtime, anima, make_home


def two_homes(tmp_path: Path) -> tuple[Home, Home, str]:
    """Home host-a with agent arya pushed to a local remote, and an empty home host-b that
    host-a knows as peer `b` and that takes agents from host-a."""
    url = str(tmp_path / "remotes" / "arya.git")
    a = make_home(tmp_path / "a", "host-a", peers={"b": tmp_path / "b"},
                  extra=f'\n[remotes.backup]\nurl = "{tmp_path}/remotes/{{agent}}.git"\n')
    b = make_home(tmp_path / "b", "host-b", peers={"host-a": tmp_path / "a"})  # accept_agents
    create_agent(a, "arya")
    anima(a, "sync")
    return a, b, url


def answered(agent: Agent, msg: Message) -> list[Message]:
    return [r for r in replies(agent) if r.in_reply_to == msg.id]


def test_move_between_two_running_homes(tmp_path: Path) -> None:
    a, b, _ = two_homes(tmp_path)
    here, there = Agent(a, "arya"), Agent(b, "arya")
    with Runtime(a).start() as rt_a, Runtime(b).start() as rt_b:
        before = send(here, "remember that I moved house")
        wait_for(lambda: answered(here, before), what="the reply on host-a")
        moved = anima(a, "move", "arya", "--to", "b")
        assert "arya moved to b (host-b)" in moved.stdout
        after = send(there, "what do you remember?")
        wait_for(lambda: answered(there, after), what="the reply on host-b")
        late = send(here, "a message for the old address")  # lands on host-a: handed on
        wait_for(lambda: answered(there, late), what="the late message answered on host-b")
        wait_for(lambda: not list(here.inbox.glob("*.md")), what="host-a's inbox empty")
    for msg in (before, after, late):
        mine = answered(there, msg)  # host-b's outbox has host-a's history too, via git
        assert len(mine) == 1, (msg.body, rt_a.output(), rt_b.output())
    assert not answered(here, after) and not answered(here, late)
    assert "I moved house" in answered(there, after)[0].body
    log_a = subprocess.run(["git", "-C", str(here.path), "log", "--format=%s"], capture_output=True,
                           text=True, check=True).stdout
    assert log_a.count("turn(arya)") == 1  # host-a committed only the turn before the move
    assert "moved to host-b" in anima(a, "remote", "list").stdout
    shown = json.loads(anima(a, "status", "--json").stdout)["agents"]["arya"]["remote"]
    assert shown["runs_here"] is False and "moved to host-b" in shown["lease"]
    chat = anima(a, "chat", "arya", check=False)  # on the old home: said where it went
    assert chat.returncode != 0 and "anima chat arya@b" in chat.stderr
    table = " ".join(anima(a, "status").stdout.replace("│", " ").split())  # cells may wrap
    assert "not run here" in table and "host-b" in table


@pytest.mark.parametrize("step", ["marked", "pushed", "handed", "moved"])
def test_move_killed_during_the_hand_over_leaves_one_host(tmp_path: Path, step: str) -> None:
    """A move killed at `step`: the lease names one host, only that host may run the agent
    (host-a's own record is settled from the lease), and running the move again finishes it."""
    a, b, url = two_homes(tmp_path)
    here = Agent(a, "arya")
    env = {**os.environ, "ANIMA_HOME": str(a.root), remotes.KILL_AT_ENV: step}
    killed = subprocess.run([sys.executable, "-m", "anima", "move", "arya", "--to", "b"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    holder = lease.read_remote(here.path, url)
    assert holder is not None
    assert holder.holder == ("host-a" if step in ("marked", "pushed") else "host-b")
    assert remotes.may_run(a, "arya") == (holder.holder == "host-a")
    if holder.holder == "host-a":  # the move never happened: host-a runs it as before
        msg = send(here, "still here?")
        assert [r.message_ids for r in run_once(a)] == [[msg.id]]
    anima(a, "move", "arya", "--to", "b")
    there = Agent(b, "arya")
    msg = send(there, "where are you now?")
    assert [r.message_ids for r in run_once(b)] == [[msg.id]]
    stray = send(here, "anyone home?")
    assert run_once(a) == [] and remotes.may_run(a, "arya") is False
    # never answered here; handed on to host-b by the same run (its pusher's work under cron)
    assert not (here.inbox / f"{stray.id}.md").exists()
    assert (there.inbox / f"{stray.id}.md").exists()
    assert lease.read_remote(there.path, url).holder == "host-b"  # type: ignore[union-attr]


def test_a_move_the_other_home_would_refuse_stops_nothing_here(tmp_path: Path) -> None:
    """Asked first: a home that does not take agents from this one refuses before the agent
    stops here, so it goes on answering where it is (it ran nowhere, before)."""
    a, b, _ = two_homes(tmp_path)
    b.config_path.write_text(b.config_path.read_text().replace("accept_agents = true", ""))
    moved = anima(a, "move", "arya", "--to", "b", check=False)
    assert moved.returncode != 0 and "accept_agents" in moved.stderr
    assert (lease.load(a, "arya") or lease.Lease()).state != "moved"
    msg = send(Agent(a, "arya"), "still here?")
    assert [r.message_ids for r in run_once(a)] == [[msg.id]]
    assert not (b.agents_dir / "arya").exists()
