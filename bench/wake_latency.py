"""Wake latency: a message renamed into an inbox → its request arriving at the model server.

Runs the real `anima run` against the fake model server, with 1 and with 100 agents.
Target (issue #3): p50 ≤ 20 ms, p99 ≤ 100 ms.
"""

from __future__ import annotations

import random
import sys
import time

from _common import make_home, start_runtime, summary

from anima import mailbox
from anima.message import Message
from anima.testing import FakeModelServer, Reply


def measure(n_agents: int, n_messages: int) -> list[float]:
    with FakeModelServer(default=Reply("ok")) as fake:
        home = make_home(n_agents, fake.url)
        proc = start_runtime(home)
        try:
            time.sleep(3.0)  # let the SDK warm-up finish: we measure steady state
            names = home.agent_names()
            lat = []
            for i in range(n_messages):
                name = random.choice(names)
                msg = Message.create(sender="you", to=name, body=f"ping {i}")
                before = len(fake.requests)
                t0 = time.time()
                mailbox.deliver(home.agents_dir / name, msg)
                reqs = fake.wait_for_requests(before + 1, timeout=10)
                lat.append((reqs[before].at - t0) * 1000)
                time.sleep(0.05)  # let the turn commit before the next message
            return lat[5:]  # the first few include per-agent first-turn work
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    for agents in (1, 100):
        print(summary(f"wake latency, {agents:>3} agent(s)", measure(agents, n)), flush=True)
