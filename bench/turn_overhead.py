"""Per-turn runtime overhead, model time excluded: lock, recovery check, external-edit check,
context assembly, the write-ahead record, the commit and routing, on the offline model (≈0 ms),
for agents with 0, 1,000 and 10,000 commits of history (or the counts given). Targets: ≤ 30 ms
at 10k (issue #3); at 100k within 1.3x of 10k (issue #13).

Usage: bench/turn_overhead.py [COMMITS ...] [--flat]
  e.g. `bench/turn_overhead.py 10000 100000`. The history is built with `git fast-import` as
  turn-shaped commits (an archived message, an outbox record, a history day file appended to);
  --flat writes day files as versions before month sharding did. Building 100k commits writes
  200k files: most of its minutes are the file system (TMPDIR=/dev/shm builds faster).
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

from _common import make_home, pct

from anima import history, mailbox
from anima.gitstore import head
from anima.home import Home
from anima.message import Message
from anima.router import mark_routed, route_run, route_turn
from anima.turn import process_agent


def grow_history(repo: Path, n: int, *, flat: bool = False) -> None:
    """Append n realistic turn commits (archive, outbox, history lines) with git fast-import:
    one turn every 50 minutes from 2025-01-01, so 100k turns span nine years."""
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
        said = f'<message id="{mid}" from="you" channel="cli">\nmessage number {i}\n</message>'
        recs = [
            {"role": "user", "content": [{"type": "text", "text": said}], "turn": mid},
            {"role": "assistant", "content": [{"type": "text", "text": f"reply {i}"}], "turn": mid},
        ]
        day_lines.setdefault(day, []).extend(json.dumps(r) for r in recs)
        hist = "\n".join(day_lines[day]) + "\n"
        day_path = repo / "history" / "cli" / f"{day}.jsonl"
        if not flat:
            day_path = history.day_file(repo, "cli", day)
        files = {
            f"archive/{month}/{mid}.md": msg,
            f"outbox/{month}/{mid}-r.md": msg.replace("you", "arya"),
            str(day_path.relative_to(repo)): hist,
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
    # fast-import wrote one pack: nothing for gc to do


def build(commits: int, *, flat: bool = False) -> Home:
    """A home with one agent, a000, of `commits` turn commits, routed up to HEAD (as a runtime
    that has been running would have it)."""
    home = make_home(1, "http://127.0.0.1:9", provider="offline")
    repo = home.agents_dir / "a000"
    grow_history(repo, commits, flat=flat)
    mark_routed(home, "a000", head(repo))
    return home


def measure(home: Home, turns: int = 40, full_check: bool = False) -> list[float]:
    repo = home.agents_dir / "a000"
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
    flat = "--flat" in sys.argv
    counts = [int(a) for a in sys.argv[1:] if a != "--flat"] or [0, 1000, 10000]
    for n in counts:
        t0 = time.perf_counter()
        home = build(n, flat=flat)
        layout = "flat" if flat else "by month"
        print(f"built {n} commits (history {layout}) in {time.perf_counter() - t0:.0f} s")
        for full, label in (
            (False, "runtime (hand-edit check of edited paths)"),
            (True, "run --once (full hand-edit check)"),
        ):
            t = measure(home, full_check=full)
            print(
                f"turn overhead, {n:>6} commits, {label}: median {statistics.median(t):.1f} ms,"
                f" p95 {pct(t, 95):.1f} ms",
                flush=True,
            )
