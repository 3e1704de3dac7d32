"""Per-turn runtime overhead, model time excluded: lock, recovery check, external-edit check,
context assembly, the write-ahead record, the commit and routing, on the offline model (≈0 ms),
for agents with 0, 1,000 and 10,000 commits of history. Target (issue #3): ≤ 30 ms at 10k.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import subprocess
import time
from functools import partial
from pathlib import Path

from _common import make_home, pct

from anima import mailbox
from anima.message import Message
from anima.router import route_run, route_turn
from anima.turn import process_agent


def grow_history(repo: Path, n: int) -> None:
    """Append n realistic turn commits (archive, outbox, history line) with git fast-import."""
    if n == 0:
        return
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    lines = []
    day_lines: dict[str, list[str]] = {}
    for i in range(n):
        t = start + dt.timedelta(minutes=50 * i)
        mid = t.strftime("%Y%m%dT%H%M%S") + f"000Z-{i:06x}"
        month, day = t.strftime("%Y-%m"), t.strftime("%Y-%m-%d")
        msg = f"---\nid: {mid}\nfrom: you\n---\nmessage number {i}\n"
        rec = json.dumps({"role": "user", "content": [{"type": "text", "text": msg}], "turn": mid})
        day_lines.setdefault(day, []).append(rec)
        hist = "\n".join(day_lines[day]) + "\n"
        files = {
            f"archive/{month}/{mid}.md": msg,
            f"outbox/{month}/{mid}-r.md": msg.replace("you", "arya"),
            f"history/cli/{day}.jsonl": hist,
        }
        body = f"turn(a000): reply to cli message from you\n\nAnima-Message: {mid}\n"
        lines.append(
            f"commit refs/heads/main\ncommitter a000 <a@x> {int(t.timestamp())} +0000\n"
            f"data {len(body.encode())}\n{body}"
        )
        if i == 0:
            lines.append("from refs/heads/main^0\n")
        for path, text in files.items():
            lines.append(f"M 100644 inline {path}\ndata {len(text.encode())}\n{text}\n")
    subprocess.run(
        ["git", "fast-import", "--quiet"], cwd=repo, input="".join(lines).encode(), check=True
    )
    subprocess.run(["git", "reset", "-q", "--hard", "main"], cwd=repo, check=True)
    subprocess.run(["git", "gc", "-q"], cwd=repo, check=True)


def measure(commits: int, turns: int = 40, full_check: bool = False) -> list[float]:
    home = make_home(1, "http://127.0.0.1:9", provider="offline")
    repo = home.agents_dir / "a000"
    grow_history(repo, commits)
    # route cursor at HEAD, as a runtime that has been running would have it
    from anima.gitstore import head
    from anima.router import mark_routed

    mark_routed(home, "a000", head(repo))
    times = []
    for i in range(turns + 3):
        mailbox.deliver(repo, Message.create(sender="you", to="a000", body=f"hello {i}"))
        t0 = time.perf_counter()
        run = process_agent(  # as the runtime does: each turn routed as it commits
            home, "a000", full_check=full_check, on_commit=partial(route_turn, home)
        )
        route_run(home, run)
        if i >= 3:  # the offline model itself takes ≈0.1 ms: all of this is overhead
            times.append((time.perf_counter() - t0) * 1000)
    return times


if __name__ == "__main__":
    for n in (0, 1000, 10000):
        for full, label in (
            (False, "runtime (hand-edit check of edited paths)"),
            (True, "run --once (full hand-edit check)"),
        ):
            t = measure(n, full_check=full)
            print(
                f"turn overhead, {n:>5} commits, {label}: median {statistics.median(t):.1f} ms,"
                f" p95 {pct(t, 95):.1f} ms",
                flush=True,
            )
