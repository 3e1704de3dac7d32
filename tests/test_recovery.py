"""Crash safety of a turn: kill -9 mid-turn, and replay of an interrupted commit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import git
import pytest

from anima import gitstore, mailbox, turnlog
from anima.home import Home
from anima.message import Message, render
from anima.runtime import run_once
from anima.testing import FakeModelServer, Fault, Reply
from tests.conftest import make_agent, send


def _fsck(path: object) -> None:
    git.Repo(path).git.fsck("--strict")


def test_kill_9_mid_turn_loses_nothing_and_next_run_answers_once(
    home: Home, fake: FakeModelServer
) -> None:
    agent = make_agent(home)
    msg = send(agent, "slow one")
    fake.add(
        Reply("", tool_calls=[{"name": "write_file", "input": {"path": "w.txt", "content": "x"}}]),
        Reply("too late", fault=Fault(delay=30)),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "anima", "run", "--once"],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    fake.wait_for_requests(2, timeout=30)
    assert (agent.workspace / "w.txt").exists()  # the tool ran: the turn is half done
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (agent.inbox / f"{msg.id}.md").exists()

    fake.add(Reply("answered after the crash"))
    (r,) = run_once(home)
    assert r.error is None and r.message_ids == [msg.id]
    assert not (agent.workspace / "w.txt").exists()  # the killed turn's edit was rolled back
    assert not git.Repo(agent.path).is_dirty(untracked_files=True)
    assert len(list(agent.outbox.rglob("*.md"))) == 1
    _fsck(agent.path)


def _interrupted_record(home: Home) -> tuple[object, turnlog.TurnRecord, Message]:
    agent = make_agent(home)
    msg = send(agent, "hello")
    gitstore.commit_external(agent.path)
    reply = Message.create(sender="arya", to="you", body="hi")
    rec = turnlog.TurnRecord(
        subject="turn(arya): reply to cli message from you",
        body="hi",
        trailers=[("Anima-Message", msg.id)],
        archive=[
            (
                f"inbox/{msg.id}.md",
                str(mailbox.archive_path(agent.path, msg.id).relative_to(agent.path)),
            )
        ],
        outbox=[
            (str(mailbox.outbox_path(agent.path, reply.id).relative_to(agent.path)), render(reply))
        ],
        history_path="history/cli/2026-11-24.jsonl",
        history_records=[
            {"role": "user", "content": [], "turn": msg.id},
            {"role": "assistant", "content": [], "turn": msg.id},
        ],
    )
    return agent, rec, msg


def test_crash_after_commit_record_is_finished_on_recovery(home: Home) -> None:
    agent, rec, msg = _interrupted_record(home)
    path = agent.path / ".git/anima-turn.json"
    path.write_text(json.dumps({"phase": "committing", "record": asdict(rec)}))
    # The crash came after the outbox write and half the history append.
    out_rel, text = rec.outbox[0]
    (agent.path / out_rel).parent.mkdir(parents=True)
    (agent.path / out_rel).write_text(text)
    (agent.path / rec.history_path).parent.mkdir(parents=True)
    (agent.path / rec.history_path).write_text('{"role": "user", "cont')
    (agent.path / ".git/index.lock").write_text("")  # and git was killed mid-commit

    assert (r := turnlog.recover(agent.path)) and r.note == "finished an interrupted turn commit"
    head = gitstore.log(agent.path, limit=1)[0]
    assert head.subject == rec.subject and head.trailers["Anima-Message"] == msg.id
    lines = (agent.path / rec.history_path).read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(x)["turn"] == msg.id for x in lines)
    assert not (agent.inbox / f"{msg.id}.md").exists()
    assert not path.exists() and not git.Repo(agent.path).is_dirty(untracked_files=True)
    assert turnlog.recover(agent.path) is None
    _fsck(agent.path)


def test_crash_after_git_commit_before_cleanup_does_not_commit_twice(home: Home) -> None:
    agent, rec, _ = _interrupted_record(home)
    turnlog.commit(agent.path, rec)
    commits = len(gitstore.log(agent.path, limit=None))
    (agent.path / ".git/anima-turn.json").write_text(
        json.dumps({"phase": "committing", "record": asdict(rec)})
    )
    assert (r := turnlog.recover(agent.path)) and r.note == "turn was already committed"
    assert len(gitstore.log(agent.path, limit=None)) == commits
    assert len((agent.path / rec.history_path).read_text().splitlines()) == 2


def test_torn_running_record_puts_back_nothing_it_cannot_name(home: Home) -> None:
    """A record that cannot be read claims no paths: what differs from HEAD may be a person's,
    so it is kept (the next hand-edit check commits it), never thrown away."""
    agent, _, msg = _interrupted_record(home)
    (agent.path / ".git/anima-turn.json").write_text('{"phase": "runn')
    (agent.workspace / "stray.txt").write_text("half a turn")
    (agent.path / "memory/MEMORY.md").write_text("edited meanwhile")
    assert (r := turnlog.recover(agent.path)) and r.note.startswith("rolled back an interrupted")
    assert (agent.workspace / "stray.txt").read_text() == "half a turn"
    assert (agent.path / "memory/MEMORY.md").read_text() == "edited meanwhile"
    assert (agent.inbox / f"{msg.id}.md").exists()
    assert not (agent.path / ".git/anima-turn.json").exists()


def test_agent_lock_excludes_a_second_writer(home: Home) -> None:
    from anima.errors import Busy

    lock = home.run_dir / "locks/arya.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys,time; from pathlib import Path; from anima.gitstore import agent_lock\n"
                f"with agent_lock(Path({str(lock)!r})):\n print('held', flush=True); time.sleep(30)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(Busy, match="busy"), gitstore.agent_lock(lock, timeout=0.2):
            pass
        assert time.monotonic() - t0 >= 0.2
    finally:
        holder.kill()
        holder.wait()
    with gitstore.agent_lock(lock, timeout=1):  # released when its holder died
        pass


def test_stale_ref_lock_from_a_killed_commit_is_recovered(
    home: Home, fake: FakeModelServer
) -> None:
    agent = make_agent(home)
    gitstore.commit_external(agent.path)
    for lock in ("refs/heads/main.lock", "HEAD.lock", "index.lock"):
        (agent.path / ".git" / lock).write_text("")
    send(agent, "hello")
    fake.add(Reply("fine"))
    (r,) = run_once(home)
    assert r.error is None and r.commit == gitstore.head(agent.path)
    assert not list((agent.path / ".git").rglob("*.lock"))
    _fsck(agent.path)
