"""kill -9 at random moments while 200 messages flow through 5 agents: nothing lost, nothing
answered twice, every repository intact."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import git
import pytest

from anima import gitstore, mailbox
from anima.home import Home
from anima.message import Message
from anima.testing import FakeModelServer
from anima.testing.fake_model import echo_responder
from tests.conftest import make_agent, wait_for

N_AGENTS, N_MESSAGES, N_KILLS = 5, 200, 20


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
                msg = Message.create(
                    sender="you", to=agent.name, body=f"message {i}", conversation=conv
                )
                mailbox.deliver(agent.path, msg)
                sent[agent.name].append(msg.id)
                time.sleep(rng.uniform(0.0, 0.12))

        feeder = threading.Thread(target=deliver_all)
        feeder.start()
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
