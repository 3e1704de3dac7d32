"""kill -9 at random moments while 200 messages flow through 5 agents and a person edits and
commits by hand: nothing lost (messages, replies, hand edits, hand commits), nothing answered or
spooled twice, every repository intact."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import git
import pytest

from anima import gitstore, mailbox
from anima.agent import Agent
from anima.home import Home
from anima.message import Message
from anima.testing import FakeModelServer
from anima.testing.fake_model import echo_responder
from tests.conftest import make_agent, wait_for

N_AGENTS, N_MESSAGES, N_KILLS = 5, 200, 20


def _hand_commit(repo: Path, n: int) -> str:
    """`git commit` of one file, as a person does it: retried while git says index.lock."""
    for _ in range(50):
        out = subprocess.run(
            [
                "git",
                "-C",
                str(repo),
                "commit",
                "-q",
                "-m",
                f"person: hand commit {n}",
                "--",
                "memory/hand.md",
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode == 0:
            return subprocess.run(
                [
                    "git",
                    "-C",
                    str(repo),
                    "log",
                    "-1",
                    "--format=%H",
                    "--grep",
                    f"person: hand commit {n}$",
                ],
                capture_output=True,
                text=True,
            ).stdout.strip()
        time.sleep(0.05)
    return ""


def edit_by_hand(
    agents: list[Agent], commits: dict[str, list[str]], done: threading.Event, rng: random.Random
) -> None:
    """A person at work in the repos: uncommitted edits, and commits of their own."""
    n = 0
    while not done.is_set():
        n += 1
        for a in agents:
            with open(a.memory_dir / "scratch.md", "a") as fh:
                fh.write(f"scratch line {n}\n")
            if n % 3 == 0:
                with open(a.memory_dir / "hand.md", "a") as fh:
                    fh.write(f"committed line {n}\n")
                sha = _hand_commit(a.path, n)
                if sha:
                    commits[a.name].append(sha)
        time.sleep(rng.uniform(0.1, 0.4))


def check_hand_work(a: Agent, repo: git.Repo, commits: list[str]) -> None:
    for sha in commits:  # no person's commit was orphaned
        ancestor = ["git", "-C", str(a.path), "merge-base", "--is-ancestor", sha, "HEAD"]
        assert subprocess.run(ancestor).returncode == 0, f"{a.name}: hand commit {sha[:8]} lost"
    for note in ("scratch.md", "hand.md"):
        assert repo.git.show(f"HEAD:memory/{note}") + "\n" == (a.memory_dir / note).read_text(), (
            f"{a.name}: the last hand edit of {note} is committed"
        )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_9_stress_every_message_answered_exactly_once(home: Home) -> None:
    rng = random.Random(int(os.environ.get("ANIMA_STRESS_SEED", "7")))
    with FakeModelServer(responder=echo_responder) as fake:
        from tests.conftest import write_global_config

        write_global_config(home, fake.url, runtime={"retry_backoff": 0.2})
        agents = [make_agent(home, f"agent{i}") for i in range(N_AGENTS)]
        sent: dict[str, list[str]] = {a.name: [] for a in agents}

        def deliver_all() -> None:
            for i in range(N_MESSAGES):
                agent = agents[i % N_AGENTS]
                conv = f"c{i % 3}"
                # every fifth message comes from a channel: its reply is spooled for the adapter
                channel = {"channel": "webhook", "sender": "webhook:caller"} if i % 5 == 4 else {}
                msg = Message.create(
                    sender=channel.get("sender", "you"),
                    to=agent.name,
                    body=f"message {i}",
                    conversation=conv,
                    channel=channel.get("channel", "cli"),
                )
                mailbox.deliver(agent.path, msg)
                sent[agent.name].append(msg.id)
                time.sleep(rng.uniform(0.0, 0.12))

        hand_commits: dict[str, list[str]] = {a.name: [] for a in agents[:2]}
        feeding = threading.Event()
        feeder = threading.Thread(target=deliver_all)
        feeder.start()
        person = threading.Thread(
            target=edit_by_hand, args=(agents[:2], hand_commits, feeding, rng)
        )
        person.start()
        env = {**os.environ, "ANIMA_HOME": str(home.root)}
        kills = 0
        while kills < N_KILLS:
            proc = subprocess.Popen(
                [sys.executable, "-m", "anima", "run"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(rng.uniform(0.3, 1.6))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
        feeder.join()
        feeding.set()
        person.join()

        proc = subprocess.Popen(
            [sys.executable, "-m", "anima", "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:

            def done() -> bool:
                return all(not list(a.inbox.glob("*.md")) for a in agents) and all(
                    len(list(a.archive.rglob("*.md"))) == len(sent[a.name]) for a in agents
                )

            wait_for(done, timeout=180, what="every message archived")
            time.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0

    assert kills >= 20
    for a in agents:
        ids = sent[a.name]
        turns = [e for e in gitstore.log(a.path, limit=None) if e.subject.startswith("turn(")]
        handled = [i.strip() for t in turns for i in t.trailers["Anima-Message"].split(",")]
        assert sorted(handled) == sorted(ids), f"{a.name}: each message in exactly one turn"
        archived = sorted(p.stem for p in a.archive.rglob("*.md"))
        assert archived == sorted(ids)
        replies = [mailbox.read_message(p, a.name) for p in a.outbox.rglob("*.md")]
        assert len(replies) == len(turns), f"{a.name}: one reply per turn, no duplicates"
        in_reply_to = [r.in_reply_to for r in replies]
        assert len(set(in_reply_to)) == len(in_reply_to)
        assert (
            not list((a.inbox / "rejected").glob("*")) if (a.inbox / "rejected").exists() else True
        )
        repo = git.Repo(a.path)
        repo.git.fsck("--strict")
        assert repo.git.status("--porcelain", "--untracked-files=all") == ""
        leftovers = [p for p in (a.inbox / ".tmp").glob("*")] if (a.inbox / ".tmp").exists() else []
        assert leftovers == [], "no half-written message files"
        assert not (a.path / ".git/anima-turn.json").exists()
        if a.name in hand_commits:
            check_hand_work(a, repo, hand_commits[a.name])
    assert all(hand_commits.values()), "the person did commit in both repos"
    channel_replies = sorted(  # a batch is answered on its last message's channel
        r.id
        for a in agents
        for r in (mailbox.read_message(p, a.name) for p in a.outbox.rglob("*.md"))
        if r.channel == "webhook"
    )
    spooled = sorted(p.stem for p in (home.spool_dir / "webhook" / "new").glob("*.md"))
    assert channel_replies and spooled == channel_replies, "each channel reply spooled once"
