"""The idle runtime: resident memory and CPU of `anima run` watching 100 agents, doing nothing."""

from __future__ import annotations

import os
import time

from _common import make_home, start_runtime

from anima.testing import FakeModelServer


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    with FakeModelServer() as fake:
        for n in (1, 100):
            home = make_home(n, fake.url)
            proc = start_runtime(home)
            time.sleep(4)  # start-up and SDK warm-up
            c0, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(10)
            cpu = (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0) * 100
            print(
                f"idle runtime, {n:>3} agent(s): RSS {rss_mib(proc.pid):.0f} MiB, "
                f"CPU {cpu:.1f} % of one core"
            )
            proc.terminate()
            proc.wait()
