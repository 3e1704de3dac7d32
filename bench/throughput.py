"""Throughput: 1,000 messages spread over 100 agents, delivered at once to a live `anima run`
on the fake model server (real SDK, real HTTP), until every one is archived. Target ≤ 15 s."""

from __future__ import annotations

import time

from _common import make_home, start_runtime

from anima import mailbox
from anima.message import Message
from anima.testing import FakeModelServer, Reply

N_AGENTS, N_MESSAGES = 100, 1000


def run(one_turn_each: bool) -> None:
    with FakeModelServer(default=Reply("ok")) as fake:
        home = make_home(N_AGENTS, fake.url)
        proc = start_runtime(home)
        time.sleep(3.0)  # SDK warm-up
        names = home.agent_names()
        t0 = time.perf_counter()
        for i in range(N_MESSAGES):
            name = names[i % N_AGENTS]
            conv = f"c{i}" if one_turn_each else None  # own conversation: no batching
            mailbox.deliver(
                home.agents_dir / name,
                Message.create(sender="you", to=name, body=f"m{i}", conversation=conv),
            )
        t_delivered = time.perf_counter() - t0

        def archived() -> int:
            return sum(1 for _ in home.agents_dir.glob("*/archive/*/*.md"))

        while archived() < N_MESSAGES:
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        turns = sum(1 for _ in home.agents_dir.glob("*/outbox/*/*.md"))
        proc.terminate()
        proc.wait()
        mode = "one turn per message" if one_turn_each else "burst, batched per agent"
        print(
            f"throughput ({mode}): {N_MESSAGES} messages over {N_AGENTS} agents answered in {elapsed:.2f} s "
            f"({N_MESSAGES / elapsed:.0f} msg/s; {turns} turns, {len(fake.requests)} model calls; "
            f"delivery took {t_delivered:.2f} s)"
        )


if __name__ == "__main__":
    run(one_turn_each=False)
    run(one_turn_each=True)
