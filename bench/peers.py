"""Peer delivery latency (issue #16): a record enqueued in laptop's `spool/peer-vps/new/` → the
message file in vps's `agents/gendry/inbox/`, with the real drain running (`anima.spool.Drain`
on an asyncio loop in a thread, as `peer_drain._drain_peer` runs it), so the figure includes the
drain's watcher wake-up, the transport, the other side's `deliver` op and its fsyncs.

Two homes under /tmp, offline provider: "laptop" (agent arya) and "vps" (agent gendry). Peer vps
is reached three ways in turn:

- ssh://  through a throwaway sshd on 127.0.0.1 (tests/sshd.py); the first delivery (ssh
  handshake + the remote `anima serve-peer` starting) is reported on its own, then N warm ones
  on the same resident session; also the bare round trip of one request on that session;
- http:// to vps's webhook channel (`anima channel inbound`), HMAC-signed, keep-alive;
- file://  a local `anima serve-peer --home VPS` subprocess, for comparison.

Then a breakdown of the warm SSH path measured piece by piece, and a summary against the target
(SSH warm p50 ≤ 50 ms on loopback). `--watch-step MS` overrides `anima.spool.WATCH_STEP_MS` in
this process for an experiment.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import pct, summary

import anima.spool
from anima import mailbox, peer
from anima.agent import create_agent
from anima.home import Home
from anima.message import Message, render
from anima.peer_drain import PeerSender, conversation_of
from anima.spool import Drain, Progress, Spool
from tests.sshd import ANIMA_BIN, _missing_tool, running_sshd

SECRET = "bench-secret-shared-by-both-homes"
TARGET_MS = 50.0


def make_home(root: Path, host: str, agent: str, extra: str = "") -> Home:
    """A home named `host` with one agent, offline provider."""
    home = Home(root)
    home.init()
    home.config_path.write_text(f'host_name = "{host}"\nprovider = "offline"\n{extra}')
    create_agent(home, agent)
    return home


def set_peer(home: Home, table: dict[str, Any]) -> None:
    """(Re)write laptop's [peers.vps] table: one transport per part of the bench."""
    lines = ['host_name = "laptop"', 'provider = "offline"', "", "[peers.vps]"]
    for key, value in table.items():
        if isinstance(value, list):
            lines.append(f"{key} = [" + ", ".join(f'"{v}"' for v in value) + "]")
        else:
            lines.append(f'{key} = "{value}"')
    home.config_path.write_text("\n".join(lines) + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_file(path: Path, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > end:
            raise TimeoutError(f"{path} did not appear within {timeout:g}s")
        time.sleep(0.0002)


class LiveDrain:
    """The peer's Drain on its own event loop in a thread, with a sender we keep (so its warm
    session can be used once the drain stopped)."""

    def __init__(self, home: Home, spool: Spool, send: Callable[..., Any]):
        self.spool = spool
        self.send = send
        self.policy = peer.config(home, "vps").delivery
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.started.wait()
        time.sleep(0.3)  # the watcher is registered and the first scan is done

    def _run(self) -> None:
        async def main() -> None:
            self.stop = asyncio.Event()
            self.started.set()
            drain = Drain(self.spool, self.send, self.policy, ordered_by=conversation_of)
            await drain.run(self.stop)

        self.loop.run_until_complete(main())

    def close(self) -> None:
        assert self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)
        self.loop.close()


def record(i: int) -> Message:
    return Message.create(sender="arya", to="gendry@vps", body=f"bench {i}", channel="agent")


def one_delivery(spool: Spool, inbox: Path, i: int) -> float:
    """Milliseconds from enqueue to the file in the remote inbox."""
    msg = record(i)
    target = inbox / f"{msg.id}.md"
    t0 = time.perf_counter()
    spool.enqueue(msg)
    wait_file(target)
    return (time.perf_counter() - t0) * 1000


def deliveries(spool: Spool, inbox: Path, n: int) -> list[float]:
    out = []
    for i in range(n):
        time.sleep(random.uniform(0.02, 0.06))  # a random phase against the watch step
        out.append(one_delivery(spool, inbox, i))
    return out


def round_trips(laptop: Home, transport: peer.Transport, op: str, n: int) -> list[float]:
    """One request at a time on the warm transport (the drain stopped meanwhile)."""
    out = []
    for i in range(n):
        args = {"message": render(record(i).with_(to="gendry"))} if op == "deliver" else {}
        request = peer.request(laptop, op, **args)
        t0 = time.perf_counter()
        transport.call(request)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def part(
    label: str, laptop: Home, vps: Home, n: int, results: dict[str, list[float]]
) -> PeerSender:
    """Cold first delivery, then n warm ones, through the live drain; returns the sender (its
    transport still open) for round trips."""
    spool = Spool(laptop, peer.spool_name("vps"))
    inbox = vps.agents_dir / "gendry" / "inbox"
    sender = PeerSender(laptop, "vps")
    drain = LiveDrain(laptop, spool, sender)
    try:
        cold = one_delivery(spool, inbox, -1)
        print(f"{label}: first delivery (cold: connect + remote start) {cold:.1f} ms")
        warm = deliveries(spool, inbox, n)
        print(summary(f"{label}: spool → remote inbox, warm", warm))
        results[f"{label} cold"] = [cold]
        results[f"{label} warm"] = warm
    finally:
        drain.close()
    return sender


def ssh(laptop: Home, vps: Home, n: int, results: dict[str, list[float]]) -> None:
    missing = _missing_tool()
    if missing is not None:
        print(f"ssh: skipped: {missing} is not installed (apt-get install openssh-server)")
        return
    with tempfile.TemporaryDirectory(prefix="anima-bench-sshd-") as tmp, running_sshd(Path(tmp)) as sshd:
        set_peer(
            laptop,
            {"url": sshd.url(vps.root), "ssh_command": sshd.ssh_command, "remote_command": ANIMA_BIN},
        )
        handshake = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([*sshd.ssh_command, "--", f"{sshd.user}@{sshd.host}", "true"], check=True)
            handshake.append((time.perf_counter() - t0) * 1000)
        print(f"ssh: `ssh HOST true` (handshake, no session kept): p50 "
              f"{statistics.median(handshake):.1f} ms (n=3)")
        sender = part("ssh", laptop, vps, n, results)
        try:
            for op in ("hello", "deliver"):
                ms = round_trips(laptop, sender.transport, op, n)
                print(summary(f"ssh: bare round trip of one {op!r} request, warm session", ms))
                results[f"ssh rtt {op}"] = ms
        finally:
            sender.close()


def http(laptop: Home, vps: Home, n: int, results: dict[str, list[float]]) -> None:
    from channels import start_adapter

    port = free_port()
    vps.config_path.write_text(
        'host_name = "vps"\nprovider = "offline"\n\n[peers.laptop]\n'
        'url = "http://127.0.0.1:9"\nsecret_env = "PEER_SECRET"\n\n'
        f'[channels.inbound]\nkind = "webhook"\nport = {port}\n'
    )
    os.environ["PEER_SECRET"] = SECRET
    proc = start_adapter(vps, "inbound", "listening on", {"PEER_SECRET": SECRET})
    try:
        set_peer(laptop, {"url": f"http://127.0.0.1:{port}", "secret_env": "PEER_SECRET"})
        sender = part("http", laptop, vps, n, results)
        try:
            ms = round_trips(laptop, sender.transport, "deliver", n)
            print(summary("http: bare round trip of one 'deliver' request, keep-alive", ms))
            results["http rtt deliver"] = ms
        finally:
            sender.close()
    finally:
        proc.terminate()
        proc.wait()


def file_peer(laptop: Home, vps: Home, n: int, results: dict[str, list[float]]) -> None:
    set_peer(laptop, {"url": f"file://{vps.root}", "remote_command": ANIMA_BIN})
    part("file", laptop, vps, n, results).close()


def breakdown(laptop: Home, vps: Home, n: int) -> None:
    """The pieces of the warm path, each on its own, in this process."""
    gendry = vps.agents_dir / "gendry"
    enqueue, deliver = [], []
    scratch = Spool(laptop, "bench-scratch")
    for i in range(n):
        msg = record(i)
        t0 = time.perf_counter()
        scratch.enqueue(msg)
        enqueue.append((time.perf_counter() - t0) * 1000)
        local = msg.with_(to="gendry", sender="arya@laptop")
        t0 = time.perf_counter()
        mailbox.deliver(gendry, local)
        deliver.append((time.perf_counter() - t0) * 1000)
    print(summary("  Spool.enqueue (atomic write, fsync) on laptop", enqueue))
    print(summary("  mailbox.deliver (what the deliver op writes, fsyncs) on vps", deliver))

    # The drain's wake-up alone: a sender that only notes when it was called.
    called: dict[str, float] = {}

    async def note(msg: Message, progress: Progress) -> None:
        called[msg.id] = time.perf_counter()

    wake_spool = Spool(laptop, "bench-wake")
    drain = LiveDrain(laptop, wake_spool, note)
    wake = []
    try:
        for i in range(n):
            time.sleep(random.uniform(0.02, 0.06))
            msg = record(i)
            t0 = time.perf_counter()
            wake_spool.enqueue(msg)
            end = time.monotonic() + 10
            while msg.id not in called and time.monotonic() < end:
                time.sleep(0.0002)
            wake.append((called[msg.id] - t0) * 1000)
    finally:
        drain.close()
    print(summary(
        f"  drain wake-up: enqueue → send called (WATCH_STEP_MS = {anima.spool.WATCH_STEP_MS})", wake
    ))

    start = []
    for _ in range(max(3, n // 10)):
        t0 = time.perf_counter()
        subprocess.run([ANIMA_BIN, "--home", str(vps.root), "serve-peer"], input=b"", check=True)
        start.append((time.perf_counter() - t0) * 1000)
    print(f"  `anima serve-peer` start and exit (empty input), cold-path share: p50 "
          f"{statistics.median(start):.1f} ms (n={len(start)})")


def verdict(results: dict[str, list[float]]) -> None:
    print("\nsummary (ms)")
    print(f"{'path':<34}{'p50':>8}{'p95':>8}{'max':>8}")
    for label, ms in results.items():
        print(f"{label:<34}{statistics.median(ms):>8.1f}{pct(ms, 95):>8.1f}{max(ms):>8.1f}")
    warm = results.get("ssh warm")
    if warm is None:
        print(f"target: SSH warm p50 ≤ {TARGET_MS:g} ms: not measured (ssh part skipped or sshd missing)")
        return
    p50 = statistics.median(warm)
    print(f"target: SSH warm spool → remote inbox p50 ≤ {TARGET_MS:g} ms: "
          f"{p50:.1f} ms, {'met' if p50 <= TARGET_MS else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50, help="warm deliveries per transport")
    parser.add_argument("--only", default="ssh,http,file,breakdown",
                        help="comma-separated parts to run (default: all)")
    parser.add_argument("--watch-step", type=int, default=None,
                        help="override anima.spool.WATCH_STEP_MS (ms) in this process")
    args = parser.parse_args()
    if args.watch_step is not None:
        anima.spool.WATCH_STEP_MS = args.watch_step
    only = set(args.only.split(","))
    root = Path(tempfile.mkdtemp(prefix="anima-bench-peers-"))
    laptop = make_home(root / "laptop", "laptop", "arya")
    vps = make_home(root / "vps", "vps", "gendry")
    results: dict[str, list[float]] = {}
    print(f"homes under {root}; n={args.n}; WATCH_STEP_MS = {anima.spool.WATCH_STEP_MS}")
    if "ssh" in only:
        ssh(laptop, vps, args.n, results)
    if "http" in only:
        http(laptop, vps, args.n, results)
    if "file" in only:
        file_peer(laptop, vps, args.n, results)
    if "breakdown" in only:
        print("breakdown of the warm path:")
        breakdown(laptop, vps, args.n)
    verdict(results)


if __name__ == "__main__":
    main()
