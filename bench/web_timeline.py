"""`anima web` on a big agent: the audit timeline's first page over 100k commits (target
≤ 200 ms, issue #17), its second page, a filter git can select by, and the charts page; each
measured through a live `anima web` over HTTP (the whole request) and as the page function
alone (in this process, no HTTP).

Usage: bench/web_timeline.py [COMMITS]   (default 100000; the history is built with
`git fast-import` by turn_overhead.build: 100k commits take a few minutes, mostly the checkout;
TMPDIR=/dev/shm builds faster)
"""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
import sys
import time
from urllib.parse import urlsplit

from _common import env_for, summary
from turn_overhead import build

from anima.web import pages

RUNS = 20


def http_ms(port: int, path: str, runs: int = RUNS) -> list[float]:
    times = []
    for _ in range(runs):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        t = time.perf_counter()
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        times.append((time.perf_counter() - t) * 1000)
        conn.close()
        assert r.status == 200, body[:500]
    return times


def call_ms(fn, *args, runs: int = RUNS) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(*args)
        times.append((time.perf_counter() - t) * 1000)
    return times


def main() -> None:
    commits = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    t = time.perf_counter()
    home = build(commits)
    print(f"built a000 with {commits:,} commits in {time.perf_counter() - t:.0f} s ({home.root})")
    cases = {
        "timeline, first page": "/timeline?agent=a000",
        "timeline, page 2": "/timeline?agent=a000&page=1",
        "timeline, page 40 (1,000 turns back)": "/timeline?agent=a000&page=39",
        "timeline, trigger filter no commit matches (reads all)": "/timeline?agent=a000&trigger=heartbeat",
        "charts (30 days of turns)": "/agents/a000/stats",
    }
    for label, path in list(cases.items())[:2]:
        params = dict(x.split("=") for x in path.split("?")[1].split("&"))
        print(summary(f"{label}, page function", call_ms(pages.timeline_page, home, params)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "anima", "web", "--port", "0"],
        env=env_for(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"serving (\S+)", line)
        assert found, line
        port = urlsplit(found.group(1)).port or 80
        for label, path in cases.items():
            runs = 3 if "reads all" in label else RUNS
            print(summary(f"{label}, HTTP", http_ms(port, path, runs)))
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(home.root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
