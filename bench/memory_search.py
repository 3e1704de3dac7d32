"""Memory at scale: one agent with 10,000 memory notes and ~50 MB of conversation history.

Prints the full index build time, `search()` latency as a turn sees it (incremental refresh
check included), and context assembly time (persona, memory index, history window, auto-memory
recall). Targets (issue #5): search p95 ≤ 50 ms, context assembly ≤ 20 ms.
Usage: bench/memory_search.py [NOTES] [HISTORY_MB]
       bench/memory_search.py --turns N   (an agent of N turn commits, as turn_overhead.py builds
       it: `memory reindex`, and search as a turn and as `anima memory search` run it; issue #13)
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import pct

from anima import context, gitstore, history, search
from anima.agent import Agent, create_agent
from anima.home import Home
from anima.message import Message

RNG = random.Random(5)
COMMON = (
    "garden sister boiler invoice meeting recipe train holiday doctor budget cello kayak "
    "greenhouse tomato birthday passport school rent piano bicycle library coffee project "
    "deadline report weather mountain river market dentist insurance painting camera"
).split()
VOCAB = COMMON + [f"w{RNG.randrange(36**4):04x}{i}" for i in range(6000)]


def words(n: int) -> str:
    return " ".join(RNG.choice(VOCAB) for _ in range(n))


def populate(agent: Agent, n_notes: int, history_mb: float) -> None:
    notes = agent.memory_dir / "topics"
    notes.mkdir(parents=True)
    for i in range(n_notes):
        (notes / f"n{i:05d}.md").write_text(
            f"---\ndescription: {words(6)}\n---\n# note {i}\n\n{words(120)}\n"
        )
    target = history_mb * 1024 * 1024
    written = 0
    turn = 0
    while written < target:
        conv = f"c{turn % 40:02d}"
        day = f"2025-{1 + turn // 4000 % 12:02d}-{1 + turn // 150 % 28:02d}"
        path = history.day_file(agent.path, conv, day)
        path.parent.mkdir(parents=True, exist_ok=True)
        tid = f"t{turn:07d}"
        user = f'<message id="{tid}" from="you" channel="cli">\n{words(60)}\n</message>'
        recs = [
            {"role": "user", "content": [{"type": "text", "text": user}], "turn": tid},
            {"role": "assistant", "content": [{"type": "text", "text": words(80)}], "turn": tid},
        ]
        line = "".join(json.dumps(r) + "\n" for r in recs)
        with path.open("a") as f:
            f.write(line)
        written += len(line)
        turn += 1


def search_figures(agent_dir: Path, queries: list[str], *, cli: bool = False) -> None:
    """Search latency per query in each way the index is brought up to date first."""
    ways: list[tuple[str, dict[str, Any]]] = [
        ("turn path: fast update from git + query", {"touched": ()}),
        ("stat-walk refresh (every file) + query", {}),
        ("query only", {"refresh_first": False}),
    ]
    for label, kw in ways + ([("as `anima memory search` (git status first)", {})] if cli else []):
        ms = []
        for q in queries:
            t0 = time.perf_counter()
            if label.startswith("as `anima"):
                kw = {"touched": gitstore.dirty_paths(agent_dir, ["memory", "history"])}
            hits = search.search(agent_dir, q, limit=5, **kw)
            ms.append((time.perf_counter() - t0) * 1000)
            assert hits, q
        print(
            f"search, {label}: p50 {statistics.median(ms):.1f} ms, "
            f"p95 {pct(ms, 95):.1f} ms, max {max(ms):.1f} ms (n={len(ms)})",
            flush=True,
        )


def turns_main(n: int) -> None:
    from turn_overhead import build

    t0 = time.monotonic()
    agent_dir = build(n).agents_dir / "a000"
    print(f"built an agent of {n} turn commits in {time.monotonic() - t0:.0f} s", flush=True)
    for _ in range(2):
        t0 = time.monotonic()
        files = search.refresh(agent_dir, rebuild=True)
        print(f"memory reindex: {files} files in {time.monotonic() - t0:.2f} s", flush=True)
    queries = [f"message number {RNG.randrange(n)}" for _ in range(100)]
    search_figures(agent_dir, queries, cli=True)


def main() -> None:
    if sys.argv[1:2] == ["--turns"]:
        turns_main(int(sys.argv[2]))
        return
    n_notes = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    history_mb = float(sys.argv[2]) if len(sys.argv) > 2 else 50.0
    home = Home(Path(tempfile.mkdtemp(prefix="anima-bench-")) / "home")
    home.init()
    agent = create_agent(home, "arya")
    t0 = time.monotonic()
    populate(agent, n_notes, history_mb)
    size = sum(p.stat().st_size for p in (agent.path / "history").rglob("*.jsonl"))
    print(
        f"corpus: {n_notes} notes, {size / 2**20:.1f} MB of history ({time.monotonic() - t0:.1f} s)"
    )

    t0 = time.monotonic()
    n = search.refresh(agent.path, rebuild=True)
    index_mb = (agent.path / search.INDEX).stat().st_size / 2**20
    print(f"full index build: {n} files in {time.monotonic() - t0:.1f} s ({index_mb:.0f} MB index)")

    queries = [f"{RNG.choice(COMMON)} {words(2)} {RNG.choice(COMMON)}" for _ in range(200)]
    search_figures(agent.path, queries)

    ag = Agent(home, "arya")
    ms = []
    for i in range(100):
        msg = Message.create(sender="you", to="arya", body=f"{queries[i]} — what did we say?")
        t0 = time.perf_counter()
        ctx = context.assemble(ag, [msg], "c07")
        ms.append((time.perf_counter() - t0) * 1000)
    assert "<recalled" in ctx.recalled
    print(
        f"context assembly (recall included): p50 {statistics.median(ms):.1f} ms, "
        f"p95 {pct(ms, 95):.1f} ms (n={len(ms)})"
    )

    hist = str(history.day_file(agent.path, "c07", "2025-01-01").relative_to(agent.path))
    ms = []
    for i in range(50):  # what the next turn's search pays after a turn appended and committed
        with (agent.path / hist).open("a") as f:
            text = words(80)
            rec = {
                "role": "assistant",
                "turn": f"new{i}",
                "content": [{"type": "text", "text": text}],
            }
            f.write(json.dumps(rec) + "\n")
        gitstore.commit(agent.path, f"turn {i}", paths=[hist])
        t0 = time.perf_counter()
        hits = search.search(agent.path, text[:40], limit=5, touched=())
        ms.append((time.perf_counter() - t0) * 1000)
        assert any(h.path == hist for h in hits)
    print(
        f"search after a committed turn (incremental index of the appended turn): "
        f"p50 {statistics.median(ms):.1f} ms, p95 {pct(ms, 95):.1f} ms"
    )


if __name__ == "__main__":
    main()
