"""Short commands' cold start: `anima tick`, `anima send` and `anima status` as whole processes, as
systemd, cron or a shell starts them, against a bare `python -c pass` from the same venv.

Target (issue #13): each ≤ 4x bare python, median. The runs are interleaved (one of each per
round), so a busy machine slows all of them alike and the ratios stay comparable. Bytecode is cached
(in a temporary PYTHONPYCACHEPREFIX, even if PYTHONDONTWRITEBYTECODE is set) as an installed wheel
has it: otherwise every run would compile every anima module from source.

    .venv/bin/python bench/tick_cold_start.py [ROUNDS]
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import env_for, make_home, summary

TARGET_RATIO = 4.0


def commands() -> dict[str, list[str]]:
    """What is timed, by label: bare python first (the unit of the ratios)."""
    script = shutil.which("anima") or str(Path(sys.executable).parent / "anima")
    py = [sys.executable, "-m", "anima"]
    return {
        "bare python -c pass": [sys.executable, "-c", "pass"],
        "anima tick": [*py, "tick", "a000", "--force"],
        "anima tick (console script)": [script, "tick", "a000", "--force"],
        "anima send": [*py, "send", "a000", "hello"],
        "anima status": [*py, "status"],
    }


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return (time.perf_counter() - t0) * 1000


if __name__ == "__main__":
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 25
    env = env_for(make_home(1, "http://127.0.0.1:9"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="anima-bench-pycache-")
    cmds = commands()
    times: dict[str, list[float]] = {label: [] for label in cmds}
    for cmd in cmds.values():  # warm the page cache and the .pyc files once
        timed(cmd, env)
    for _ in range(rounds):
        for label, cmd in cmds.items():
            times[label].append(timed(cmd, env))
    bare = statistics.median(times["bare python -c pass"])
    for label, ms in times.items():
        ratio = statistics.median(ms) / bare
        verdict = (
            "" if label.startswith("bare") else f" ({'ok' if ratio <= TARGET_RATIO else 'over'})"
        )
        print(f"{summary(label, ms)}  = {ratio:.1f}x bare{verdict}")
