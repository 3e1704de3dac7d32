"""Short commands' cold start: `anima tick`, `anima send` and `anima status` as whole processes, as
systemd, cron or a shell starts them, against a bare `python -c pass` from the same venv.

Target (issue #13): each ≤ 4x bare python, median. The runs are interleaved (one of each per
round), so a busy machine slows all of them alike and the ratios stay comparable. Bytecode is cached
(in a temporary PYTHONPYCACHEPREFIX, even if PYTHONDONTWRITEBYTECODE is set) as an installed wheel
has it: otherwise every run would compile every anima module from source. Besides wall time, each
line gives the median CPU time (user + system) of the process, which a shared machine inflates
less, as a ratio to bare python's.

    .venv/bin/python bench/tick_cold_start.py [ROUNDS]
"""

from __future__ import annotations

import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, env_for, make_home, summary

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


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) milliseconds of one run of `cmd`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    wall = (time.perf_counter() - t0) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000
    return wall, cpu


if __name__ == "__main__":
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 25
    env = env_for(make_home(1, "http://127.0.0.1:9"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="anima-bench-pycache-")
    env["PYTHONPATH"] = str(ROOT)  # the tree this bench is in, even if another is installed
    cmds = commands()
    walls: dict[str, list[float]] = {label: [] for label in cmds}
    cpus: dict[str, list[float]] = {label: [] for label in cmds}
    for cmd in cmds.values():  # warm the page cache and the .pyc files once
        timed(cmd, env)
    for _ in range(rounds):
        for label, cmd in cmds.items():
            wall, cpu = timed(cmd, env)
            walls[label].append(wall)
            cpus[label].append(cpu)
    bare, bare_cpu = (statistics.median(v["bare python -c pass"]) for v in (walls, cpus))
    for label, ms in walls.items():
        ratio = statistics.median(ms) / bare
        cpu = statistics.median(cpus[label])
        verdict = "" if label.startswith("bare") else (" ok" if ratio <= TARGET_RATIO else " over")
        print(
            f"{summary(label, ms)} = {ratio:.1f}x bare{verdict}; "
            f"cpu p50={cpu:.1f} ms = {cpu / bare_cpu:.1f}x bare"
        )
