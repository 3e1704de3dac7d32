"""Landing → turn commit through the live runtime, offline model (its own work ≈ 0 ms).

A message is written the Maildir way by a program that is not Anima (write in a staging folder
on the same filesystem, then rename into inbox/), and the clock runs until the turn that
answers it is committed (HEAD moves). Before issue #13 a renamed-in file waited the whole
settle_ms (200 ms); now it is taken at once. Target (issue #13): p50 ≤ 40 ms.
"""

from __future__ import annotations

import sys
import time

from _common import make_home, start_runtime, summary

from anima.gitstore import head


def measure(n_messages: int) -> list[float]:
    home = make_home(1, "http://127.0.0.1:9", provider="offline")
    agent = home.agents_dir / "a000"
    staging = home.root / "staging"
    staging.mkdir()
    proc = start_runtime(home)
    try:
        time.sleep(1.0)
        lat = []
        for i in range(n_messages):
            before = head(agent)
            tmp = staging / f"m{i}.md"
            tmp.write_text(f"---\nfrom: you\n---\nhello {i}\n")
            t0 = time.perf_counter()
            tmp.rename(agent / "inbox" / f"m{i}.md")
            deadline = t0 + 10
            while head(agent) == before and time.perf_counter() < deadline:
                time.sleep(0.0005)
            lat.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.05)
        return lat[3:]
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    print(summary("landing → commit, renamed in by another program", measure(n)), flush=True)
