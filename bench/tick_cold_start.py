"""`anima tick NAME` cold start: a whole process, as systemd or cron starts it. Target ≤ 150 ms."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import env_for, make_home, summary

if __name__ == "__main__":
    home = make_home(1, "http://127.0.0.1:9")
    env = env_for(home)
    script = shutil.which("anima") or str(Path(sys.executable).parent / "anima")
    for label, cmd in (
        ("console script", [script]),
        ("python -m anima", [sys.executable, "-m", "anima"]),
    ):
        times = []
        for _ in range(25):
            t0 = time.perf_counter()
            subprocess.run(
                [*cmd, "tick", "a000", "--force"], env=env, check=True, capture_output=True
            )
            times.append((time.perf_counter() - t0) * 1000)
        print(summary(f"anima tick cold start ({label})", times))
