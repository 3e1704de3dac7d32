"""Shared set-up for the benches: a throwaway home, N agents, the fake model server."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from anima.agent import create_agent  # noqa: E402
from anima.home import Home  # noqa: E402

RUNTIME_EXTRA = os.environ.get("ANIMA_BENCH_RUNTIME", "").replace(";", "\n") + "\n"


def make_home(n_agents: int, url: str, provider: str = "anthropic") -> Home:
    root = Path(tempfile.mkdtemp(prefix="anima-bench-")) / "home"
    home = Home(root)
    home.init()
    home.config_path.write_text(
        f'provider = "{provider}"\n[providers]\nanthropic_base_url = "{url}"\n'
        f'ollama_host = "{url}"\nretries = 0\n[runtime]\nmax_concurrent_turns = 4\n{RUNTIME_EXTRA}'
    )
    for i in range(n_agents):
        create_agent(home, f"a{i:03d}")
    return home


def env_for(home: Home) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC", "OLLAMA"))}
    env.update(ANIMA_HOME=str(home.root), ANTHROPIC_API_KEY="bench-key")
    return env


def start_runtime(
    home: Home, until: tuple[str, ...] = ("anima run: watching",), marks: dict[str, float] | None = None
) -> subprocess.Popen[str]:
    """`anima run` in a subprocess, returned once it has logged every line in `until`; `marks`
    gets the milliseconds from the start to each of them."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "anima", "run"],
        env=env_for(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen = marks if marks is not None else {}
    for line in proc.stdout:
        for wanted in until:
            if wanted in line and wanted not in seen:
                seen[wanted] = (time.perf_counter() - t0) * 1000
        if all(w in seen for w in until):
            break
    import threading

    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    return proc


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def summary(label: str, ms: list[float]) -> str:
    return (
        f"{label}: n={len(ms)} p50={statistics.median(ms):.1f} ms p95={pct(ms, 95):.1f} ms "
        f"p99={pct(ms, 99):.1f} ms max={max(ms):.1f} ms"
    )


def wait_until(pred, timeout: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.001)
    return False
