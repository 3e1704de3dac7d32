"""Channel adapters: what an adapter adds between the outside world and the files.

- Telegram inbound: an update queued at the fake Bot API → the message file in the agent's inbox
  (python-telegram-bot long polling, admission, atomic delivery).
- Telegram outbound: a record routed into spool/telegram/new → sendMessage at the fake Bot API
  (watch wake-up, read, send, progress, move to sent/).
- Telegram end to end: an update → the reply at the fake Bot API, through a live `anima run` and
  the fake model server (the whole path a person waits for, minus the model's own time).
- Webhook: POST → 202 (authenticated, delivered to the inbox), sequential, and the request rate.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from _common import env_for, make_home, start_runtime, summary, wait_until

from anima import router
from anima.home import Home
from anima.message import Message
from anima.testing import FakeModelServer, Reply
from anima.testing.fake_telegram import FakeTelegram

OWNER = 7


def start_adapter(home: Home, name: str, ready: str, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "anima", "channel", name],
        env={**env_for(home), **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if ready in line:
            break
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    return proc


def idle(pid: int, label: str, seconds: float = 10.0) -> str:
    """CPU (% of one core) and resident memory of an idle process, from /proc."""
    def cpu() -> float:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    time.sleep(2.0)
    c0, t0 = cpu(), time.perf_counter()
    time.sleep(seconds)
    share = (cpu() - c0) / (time.perf_counter() - t0) * 100
    rss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS"))
    return f"{label}: CPU {share:.1f} % of one core, RSS {rss / 1024:.0f} MiB"


def telegram(n: int) -> None:
    with FakeModelServer(default=Reply("ok")) as fake, FakeTelegram() as tg:
        home = make_home(1, fake.url)
        with open(home.config_path, "a") as fh:
            fh.write(f'[channels.telegram]\nagent = "a000"\ntoken_env = "TG"\nowner = "{OWNER}"\n'
                     f'base_url = "{tg.url}"\npoll_timeout = 10\n')
        inbox = home.agents_dir / "a000" / "inbox"
        proc = start_adapter(home, "telegram", "serving", {"TG": tg.token})
        try:
            print(idle(proc.pid, "telegram adapter idle"))
            inbound = []
            for i in range(n):
                t0 = time.perf_counter()
                tg.push(f"in {i}", user=OWNER)
                wait_until(lambda i=i: len(list(inbox.glob("*.md"))) > i, 10)
                inbound.append((time.perf_counter() - t0) * 1000)
            print(summary("telegram inbound (update → inbox file)", inbound[3:]))
            outbound = []
            for i in range(n):
                msg = Message.create(sender="a000", to=f"telegram:{OWNER}", body=f"out {i}", channel="telegram")
                t0 = time.perf_counter()
                router.route(home, [msg])
                tg.wait_sent(i + 1, 10)
                outbound.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.02)
            print(summary("telegram outbound (spool record → sendMessage)", outbound[3:]))
            for p in inbox.glob("*.md"):
                p.unlink()
            tg.sent.clear()
            runtime = start_runtime(home)
            try:
                time.sleep(3.0)  # SDK warm-up: steady state
                e2e = []
                for i in range(n):
                    t0 = time.perf_counter()
                    tg.push(f"round trip {i}", user=OWNER)
                    tg.wait_sent(i + 1, 20)
                    e2e.append((time.perf_counter() - t0) * 1000)
                    time.sleep(0.05)
                print(summary("telegram round trip (update → reply sent, live runtime, fake model)", e2e[3:]))
            finally:
                runtime.terminate()
                runtime.wait()
        finally:
            proc.terminate()
            proc.wait()


def webhook(n: int) -> None:
    with FakeModelServer(default=Reply("ok")) as fake:
        home = make_home(1, fake.url)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with open(home.config_path, "a") as fh:
            fh.write(f'[channels.webhook]\nport = {port}\ntoken_env = "HOOK"\n')
        proc = start_adapter(home, "webhook", "listening on", {"HOOK": "t" * 32})
        print(idle(proc.pid, "webhook adapter idle"))
        url = f"http://127.0.0.1:{port}/v1/agents/a000/messages"
        headers = {"Authorization": "Bearer " + "t" * 32, "Content-Type": "application/json"}
        try:
            lat = []
            t_all = time.perf_counter()
            for i in range(n):
                body = json.dumps({"text": f"hook {i}"}).encode()
                t0 = time.perf_counter()
                with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers)) as r:
                    assert r.status == 202
                lat.append((time.perf_counter() - t0) * 1000)
            rate = n / (time.perf_counter() - t_all)
            print(summary("webhook POST → 202 (auth, inbox delivery, fsync)", lat[3:]) + f"; {rate:.0f} req/s sequential")
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    telegram(n)
    webhook(n * 4)
