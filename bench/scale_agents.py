"""Many agents, one runtime (issue 13, "Scale: 1,000 agents"), on the offline model.

For each home size: `anima run` start → ready (and → warm), idle CPU over 10 s, wake → commit
p50/p95 (a message renamed into an inbox until the agent's HEAD moves, over the same few agents
at every size, each answered once before measuring), and `anima status --json` (the command, and
`status.collect` in-process), and an agent made while it runs: its first message → commit.

    .venv/bin/python bench/scale_agents.py                  # 10 and 100 agents
    .venv/bin/python bench/scale_agents.py --agents 10,1000 # 1,000 takes a minute to build

Agents are built fast but faithfully: one with `create_agent`, the others `cp -a` copies with
the name put in its files and git config, and the template commit re-made under the new name.
Targets at 1,000 agents: ready ≤ 2 s, idle CPU ≤ 1 % of a core, wake p50 within 1.2x of
10 agents, status ≤ 300 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import env_for, pct, start_runtime, wait_until
from watcher_idle import cpu_seconds

from anima import gitstore, mailbox, status
from anima.agent import create_agent
from anima.home import Home
from anima.message import Message

NAMED_FILES = ("agent.toml", "persona.md", "memory/MEMORY.md", ".git/config")


def _copy_agent(home: Home, first: str, name: str) -> None:
    target = home.agents_dir / name
    staging = home.agents_dir / f".new-{name}"
    subprocess.run(["cp", "-a", str(home.agents_dir / first), str(staging)], check=True)
    for rel in NAMED_FILES:
        path = staging / rel
        path.write_text(path.read_text(encoding="utf-8").replace(first, name), encoding="utf-8")
    subprocess.run(
        ["git", "-C", str(staging), "commit", "-q", "--amend", "-a", "--no-verify"]
        + ["-m", f"init({name}): new agent from template", "--reset-author"],
        check=True,
    )
    staging.rename(target)


def build_home(n: int) -> Home:
    home = Home(Path(tempfile.mkdtemp(prefix="anima-scale-")) / "home")
    home.init()
    home.config_path.write_text('provider = "offline"\n[runtime]\nmax_concurrent_turns = 4\n')
    names = [f"a{i:04d}" for i in range(n)]
    create_agent(home, names[0])
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda name: _copy_agent(home, names[0], name), names[1:]))
    return home


def _median_ms(fn: object, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def measure(n: int, messages: int) -> str:
    t0 = time.perf_counter()
    home = build_home(n)
    built = time.perf_counter() - t0
    marks: dict[str, float] = {}
    proc = start_runtime(home, until=("anima run: watching", "anima run: warm"), marks=marks)
    try:
        time.sleep(3.0)  # whatever start-up left to do in the background
        c0, w0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(10.0)
        idle = (cpu_seconds(proc.pid) - c0) / (time.monotonic() - w0) * 100
        names = home.agent_names()
        chosen = sorted({names[0], names[len(names) // 2], names[-1], names[len(names) // 3]})
        lat = []
        for i in range(len(chosen) + messages):
            name = chosen[i % len(chosen)]
            agent_dir = home.agents_dir / name
            before = gitstore.head(agent_dir)
            t1 = time.perf_counter()
            mailbox.deliver(agent_dir, Message.create(sender="you", to=name, body=f"ping {i}"))
            if not wait_until(lambda d=agent_dir, b=before: gitstore.head(d) != b, timeout=30):
                raise RuntimeError(f"{name}: no commit within 30 s")
            if i >= len(chosen):  # the first message of each agent is its first turn
                lat.append((time.perf_counter() - t1) * 1000)
            time.sleep(0.05)
        # An agent made while the runtime runs: the watcher looks again at every agent.
        new_dir = create_agent(home, "znew").path
        t1 = time.perf_counter()
        before = gitstore.head(new_dir)
        mailbox.deliver(new_dir, Message.create(sender="you", to="znew", body="hello"))
        if not wait_until(lambda: gitstore.head(new_dir) != before, timeout=60):
            raise RuntimeError("znew: no commit within 60 s")
        new_ms = (time.perf_counter() - t1) * 1000
        collect_ms = _median_ms(lambda: status.collect(home))
        cli = [sys.executable, "-m", "anima", "status"]
        json_ms, table_ms = (
            _median_ms(lambda c=c: subprocess.run(c, env=env_for(home), capture_output=True))
            for c in (cli + ["--json"], cli)
        )
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(home.root.parent, ignore_errors=True)
    return (
        f"{n:>5} agents (built in {built:.0f} s): ready {marks['anima run: watching']:.0f} ms, "
        f"warm {marks.get('anima run: warm', float('nan')):.0f} ms, idle CPU {idle:.1f} %, "
        f"wake→commit p50 {statistics.median(lat):.0f} ms p95 {pct(lat, 95):.0f} ms, "
        f"new agent's first commit {new_ms:.0f} ms, "
        f"status --json {json_ms:.0f} ms, table {table_ms:.0f} ms (collect {collect_ms:.0f} ms)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="10,100", help="home sizes, comma-separated")
    parser.add_argument("--messages", type=int, default=30, help="wake→commit samples")
    args = parser.parse_args()
    os.environ.pop("ANTHROPIC_API_KEY", None)
    for size in (int(x) for x in args.agents.split(",")):
        print(measure(size, args.messages), flush=True)
