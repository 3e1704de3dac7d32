"""A standing comparison with OpenClaw (issue #13). Opt-in: never run in CI.

    .venv/bin/python bench/vs_openclaw.py [--turns N] [--idle SECONDS]

Both tools talk to ONE fake Anthropic server (anima.testing.FakeModelServer, in this process),
each with its own dummy key so every request is attributed to the tool that sent it. OpenClaw
gets Node 24 and the `openclaw` package from the npm registry into a throwaway prefix
(ANIMA_OPENCLAW_PREFIX, default /tmp/anima-vs-openclaw) when they are missing, and is set up the
documented way: `openclaw onboard --non-interactive --auth-choice custom-api-key
--custom-compatibility anthropic --custom-base-url <fake server>`, plus the gateway's
OpenAI-compatible endpoint switched on (`gateway.http.endpoints.chatCompletions.enabled`).
Everything else is each tool's default for a new agent.

What is measured, the two tools alternating turn by turn (who goes first alternates too), so the
load on the machine hits both alike:

- one-shot CLI turn: `anima send a000 hi` + `anima run --once` vs `openclaw agent --local
  --agent main --message hi` (OpenClaw's embedded one-shot turn), wall time and CPU time;
- a turn through the long-running process: `anima run` with a message file renamed into
  `inbox/` until its reply lands in `outbox/`, vs `openclaw gateway run` with the message POSTed
  to its `/v1/chat/completions` until the reply comes back. The first turn after start is shown
  apart from the steady ones. Then each one's CLI command against the running process: `anima
  send` (until the reply lands in outbox/) vs `openclaw agent --agent main` through the Gateway;
- start → ready of each long-running process (Anima: `warm`; OpenClaw: `[gateway] ready`);
- idle RSS and CPU of each long-running process (the whole process tree), measured over the
  same window for both;
- the model request for a trivial turn ("hi" to a new agent): characters of the JSON body the
  fake server received, and the requests per turn;
- bytes written per turn: the kernel's `write_bytes` for the process tree (pages dirtied, 4 KiB
  each, including reaped children such as git), and how much the tool's directories grew.

If OpenClaw cannot be installed or a measurement cannot be made, it says which and why, and still
prints Anima's side. No number is made up.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import env_for, make_home, start_runtime

from anima.testing import FakeModelServer, Reply
from anima.testing.fake_model import Recorded

PREFIX = Path(os.environ.get("ANIMA_OPENCLAW_PREFIX", "/tmp/anima-vs-openclaw"))
NODE_MIN = (24, 16)  # openclaw's package.json: engines.node ">=24.16.0 <25 || >=26.1.0"
ANIMA_KEY = "bench-key"  # what _common.env_for gives `anima`
CLAW_KEY = "openclaw-bench-key"
MODEL = "claude-sonnet-4-5"
TOOLS = ("anima", "openclaw")

ONE = "one-shot CLI turn: `anima send` + `anima run --once` | `openclaw agent --local`"
REQ = "the request for 'hi' to a new agent (first request of its first one-shot turn)"
START = "long-running process: `anima run` | `openclaw gateway run`"
FIRST = "first turn after start: file renamed into inbox/ → reply in outbox/ | POST /v1/chat/completions → reply"
LIVE = "later turns through the long-running process (same paths)"
CLI = "CLI command to the running process: `anima send` until the reply lands | `openclaw agent` via the Gateway"
IDLE = "idle long-running process (both over the same window, after the turns)"
SECTIONS = (ONE, REQ, START, FIRST, LIVE, CLI, IDLE)

# section -> figure -> tool -> samples; and phase -> tool -> why it is missing
samples: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(
    lambda: defaultdict(lambda: defaultdict(list))
)
missing: dict[str, dict[str, str]] = defaultdict(dict)


def add(section: str, figure: str, tool: str, value: float) -> None:
    samples[section][figure][tool].append(value)


def note(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- the process tree: CPU, memory, bytes written ----------------------------------------------


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of each process plus those of the children it has reaped."""
    total = 0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in f[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def written(pids: list[int]) -> int:
    """Bytes the processes (and the children they reaped) had the kernel write to storage."""
    total = 0
    for pid in pids:
        try:
            io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        except OSError:
            continue
        total += int(io["write_bytes"]) - int(io["cancelled_write_bytes"])
    return total


def tree_size(*roots: Path) -> int:
    total = 0
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                except OSError:
                    pass
    return total


class Meter:
    """CPU, bytes written and directory growth across one turn: a long-running process's tree
    (when `pid` is given) plus the commands this process ran and reaped meanwhile."""

    def __init__(self, pid: int | None, dirs: list[Path]):
        self.pid, self.dirs = pid, dirs

    def _read(self) -> tuple[float, float, int, int]:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu, wb = ru.ru_utime + ru.ru_stime, written([os.getpid()])
        if self.pid is not None:
            pids = descendants(self.pid)
            cpu, wb = cpu + cpu_seconds(pids), wb + written(pids)
        return time.perf_counter(), cpu, wb, tree_size(*self.dirs)

    def __enter__(self) -> Meter:
        self.start = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        self.end = self._read()

    def record(self, tool: str, prefix: str) -> None:
        (t0, c0, w0, s0), (t1, c1, w1, s1) = self.start, self.end
        add(prefix, "wall (ms)", tool, (t1 - t0) * 1000)
        add(prefix, "CPU, user + system (ms)", tool, (c1 - c0) * 1000)
        add(prefix, "bytes written (KiB)", tool, (w1 - w0) / 1024)
        add(prefix, "home/state directory grew (KiB)", tool, (s1 - s0) / 1024)


# -- the fake server: whose requests ------------------------------------------------------------


def key_of(rec: Recorded) -> str:
    h = rec.headers
    return h.get("x-api-key") or h.get("authorization", "").removeprefix("Bearer ")


class Requests:
    """Attributes the fake server's requests to turns: a tool's turn owns every request with its
    key from the turn's start to the start of its next turn (or `close`), so requests a tool
    makes after it has answered (titles, memory flushes) still count for that turn."""

    def __init__(self, fake: FakeModelServer):
        self.fake = fake
        self.turns: dict[str, list[tuple[int, str]]] = defaultdict(list)

    def start(self) -> int:
        return len(self.fake.requests)

    def done(self, tool: str, since: int, prefix: str) -> None:
        self.turns[tool].append((since, prefix))

    def close(self, grace: float = 2.0) -> None:
        time.sleep(grace)
        end = len(self.fake.requests)
        for tool, turns in self.turns.items():
            key = ANIMA_KEY if tool == "anima" else CLAW_KEY
            for i, (since, prefix) in enumerate(turns):
                until = turns[i + 1][0] if i + 1 < len(turns) else end
                reqs = [r for r in self.fake.requests[since:until] if key_of(r) == key]
                add(prefix, "model requests", tool, len(reqs))
                chars = sum(len(json.dumps(r.body)) for r in reqs)
                add(prefix, "request characters, all requests", tool, chars)
        self.turns.clear()


# -- installing OpenClaw ------------------------------------------------------------------------


def node_version(node: Path | str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.match(r"v(\d+)\.(\d+)", out.stdout.strip())
    return (int(m[1]), int(m[2])) if m else None


def npm_install(spec: str, path_dirs: list[str]) -> str | None:
    """`npm install` into the prefix; None on success, else why not."""
    npm = shutil.which("npm")
    if npm is None:
        return "no `npm` on PATH (needed to fetch Node 24 and openclaw from the npm registry)"
    try:
        PREFIX.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot make the install prefix {PREFIX}: {e}"
    note(f"npm install --prefix {PREFIX} {spec}")
    env = dict(os.environ, PATH=os.pathsep.join([*path_dirs, os.environ.get("PATH", "")]))
    cmd = [npm, "install", "--prefix", str(PREFIX), "--no-audit", "--no-fund", spec]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env)
    except subprocess.TimeoutExpired:
        return f"`npm install {spec}` took more than 20 minutes"
    if out.returncode != 0:
        tail = " | ".join((out.stdout + out.stderr).strip().splitlines()[-5:])
        return f"`npm install {spec}` failed ({out.returncode}): {tail}"
    return None


def ensure_openclaw() -> tuple[str, Path] | str:
    """(directory of a Node ≥ 24.16 binary, the openclaw entry point), or why not."""
    node_dir = PREFIX / "node_modules" / "node" / "bin"
    system_node = shutil.which("node")
    if (node_version(node_dir / "node") or (0,)) < NODE_MIN:
        if system_node and (node_version(system_node) or (0,)) >= NODE_MIN:
            node_dir = Path(system_node).parent
        else:
            why = npm_install("node@24", [])
            if why:
                return why
            if (node_version(node_dir / "node") or (0,)) < NODE_MIN:
                return f"npm's `node@24` package gave no working Node ≥ 24.16 in {node_dir}"
    claw = PREFIX / "node_modules" / ".bin" / "openclaw"
    if not claw.exists():
        why = npm_install("openclaw", [str(node_dir)])
        if why:
            return why
        if not claw.exists():
            return f"`npm install openclaw` left no {claw}"
    return str(node_dir), claw


# -- OpenClaw: a throwaway state directory, pointed at the fake server -------------------------


class Claw:
    def __init__(self, node_dir: str, entry: Path, url: str, label: str):
        self.entry = entry
        self.root = Path(tempfile.mkdtemp(prefix=f"openclaw-bench-{label}-"))
        (self.root / "home").mkdir()
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC", "OPENCLAW"))}
        self.env = dict(
            keep,
            HOME=str(self.root / "home"),
            OPENCLAW_STATE_DIR=str(self.root / "state"),
            OPENCLAW_CONFIG_PATH=str(self.root / "state" / "openclaw.json"),
            PATH=os.pathsep.join([node_dir, keep.get("PATH", "")]),
            NO_COLOR="1",
            FORCE_COLOR="0",
        )
        try:
            self.onboard(url)
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def onboard(self, url: str) -> None:
        self.cli(
            "onboard",
            "--non-interactive",
            "--accept-risk",
            "--skip-health",
            "--auth-choice",
            "custom-api-key",
            "--custom-base-url",
            url,  # OpenClaw's Anthropic client appends /v1 itself
            "--custom-model-id",
            MODEL,
            "--custom-api-key",
            CLAW_KEY,
            "--secret-input-mode",
            "plaintext",
            "--custom-compatibility",
            "anthropic",
        )
        self.cli("config", "set", "gateway.http.endpoints.chatCompletions.enabled", "true")
        config = json.loads((self.root / "state" / "openclaw.json").read_text())
        self.token = config["gateway"]["auth"]["token"]

    def cli(self, *args: str, timeout: float = 600) -> str:
        out = subprocess.run(
            [str(self.entry), *args],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if out.returncode != 0:
            tail = " | ".join((out.stdout + out.stderr).strip().splitlines()[-6:])
            raise RuntimeError(f"`openclaw {' '.join(args[:2])}` exited {out.returncode}: {tail}")
        return out.stdout


def reply_text(out: str) -> str:
    """The reply's text from `openclaw agent --json` output."""
    doc = json.loads(out)
    payloads = doc.get("payloads") or (doc.get("result") or {}).get("payloads") or []
    return " ".join(p.get("text") or "" for p in payloads)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    """`openclaw gateway run` in its own session, returned once it logs `[gateway] ready`."""

    def __init__(self, claw: Claw):
        self.claw, self.port = claw, free_port()
        claw.env["OPENCLAW_GATEWAY_PORT"] = str(self.port)  # for `openclaw agent` too
        self.lines: list[str] = []
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(claw.entry), "gateway", "run", "--port", str(self.port)],
            env=claw.env,
            cwd=claw.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.ready = False
        seen = threading.Event()
        threading.Thread(target=self._read, args=(seen,), daemon=True).start()
        seen.wait(300)
        if not self.ready or self.proc.poll() is not None:
            self.stop()
            tail = " | ".join(self.lines[-6:])
            raise RuntimeError(f"`openclaw gateway run` never logged `[gateway] ready`: {tail}")
        self.ready_ms = (time.perf_counter() - t0) * 1000

    def _read(self, seen: threading.Event) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = re.sub(r"\x1b\[[0-9;]*m", "", line).rstrip()
            self.lines = [*self.lines[-50:], line]
            if "[gateway] ready" in line:
                self.ready = True
                seen.set()
        seen.set()  # the gateway's output ended

    def send(self, text: str) -> str:
        body = {
            "model": "openclaw/main",
            "user": "bench",
            "messages": [{"role": "user", "content": text}],
        }
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.claw.token}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(req, timeout=600) as resp:
            return str(json.load(resp)["choices"][0]["message"]["content"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:  # workers it left behind, in the session this script started for it
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


# -- Anima ---------------------------------------------------------------------------------------


def replies(agent: Path) -> int:
    return sum(1 for _ in (agent / "outbox").rglob("*.md"))


def anima_cmd(home: Any, *args: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "anima", *args],
        env=env_for(home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode != 0:
        tail = " | ".join((out.stdout + out.stderr).strip().splitlines()[-6:])
        raise RuntimeError(f"`anima {args[0]}` exited {out.returncode}: {tail}")


# -- the phases ----------------------------------------------------------------------------------


def alternate(phase: str, n: int, turns: dict[str, Callable[[], None]]) -> None:
    """n rounds; in each, every tool takes one turn, who goes first alternating. A tool whose
    turn fails is reported and dropped from the rest of the phase."""
    for i in range(n):
        order = [t for t in TOOLS if t in turns]
        for tool in order if i % 2 == 0 else order[::-1]:
            try:
                turns[tool]()
            except Exception as e:  # noqa: BLE001 - any failure is reported, never hidden
                missing[phase][tool] = str(e)
                note(f"{tool}: {phase} turn failed: {e}")
                del turns[tool]


def trivial(fake: FakeModelServer, since: int, tool: str) -> None:
    """The first request of a new agent's first turn, "hi": the trivial turn's request."""
    key = ANIMA_KEY if tool == "anima" else CLAW_KEY
    reqs = [r for r in fake.requests[since:] if key_of(r) == key]
    if samples[REQ]["characters (JSON body)"][tool] or not reqs:
        return
    body = reqs[0].body
    add(REQ, "characters (JSON body)", tool, len(json.dumps(body)))
    add(REQ, "  of which system prompt", tool, len(json.dumps(body.get("system"))))
    add(REQ, "  of which tool definitions", tool, len(json.dumps(body.get("tools"))))
    add(REQ, "  of which messages", tool, len(json.dumps(body.get("messages"))))
    add(REQ, "tools offered", tool, len(body.get("tools") or []))


def one_shot(fake: FakeModelServer, claw: Claw | None, n: int) -> None:
    home = make_home(1, fake.url)
    agent = home.agents_dir / "a000"
    log = Requests(fake)
    prefix = ONE

    def anima_turn() -> None:
        since, before = log.start(), replies(agent)
        with Meter(None, [home.root]) as m:
            anima_cmd(home, "send", "a000", "hi")
            anima_cmd(home, "run", "--once")
        if replies(agent) != before + 1:
            raise RuntimeError("`anima run --once` wrote no reply to outbox/")
        m.record("anima", prefix)
        log.done("anima", since, prefix)
        trivial(fake, since, "anima")

    def claw_turn() -> None:
        assert claw is not None
        since = log.start()
        with Meter(None, [claw.root]) as m:
            out = claw.cli("agent", "--local", "--agent", "main", "--message", "hi", "--json")
        text = reply_text(out)
        if "ok" not in text:
            raise RuntimeError(f"`openclaw agent --local` replied {text!r}, not the fake's 'ok'")
        m.record("openclaw", prefix)
        log.done("openclaw", since, prefix)
        trivial(fake, since, "openclaw")

    turns: dict[str, Callable[[], None]] = {"anima": anima_turn}
    if claw is not None:
        turns["openclaw"] = claw_turn
    try:
        alternate("one-shot CLI turn", n, turns)
        log.close()
    finally:
        shutil.rmtree(home.root.parent, ignore_errors=True)


class Live:
    """Both long-running processes, one agent each, and a turn through each."""

    def __init__(self, fake: FakeModelServer, claw: Claw | None):
        self.fake, self.claw, self.log = fake, claw, Requests(fake)
        self.home = make_home(1, fake.url)
        self.agent = self.home.agents_dir / "a000"
        self.staging = self.home.root / "staging"
        self.staging.mkdir()
        self.count = 0
        marks: dict[str, float] = {}
        self.proc = start_runtime(
            self.home, until=("anima run: watching", "anima run: warm"), marks=marks
        )
        add(START, "start → ready (ms; Anima: `warm`)", "anima", marks["anima run: warm"])
        self.gateway: Gateway | None = None
        if claw is not None:
            try:
                self.gateway = Gateway(claw)
            except Exception as e:  # noqa: BLE001
                missing["long-running process"]["openclaw"] = str(e)
                note(f"openclaw: {e}")
                return
            add(START, "start → ready (ms; Anima: `warm`)", "openclaw", self.gateway.ready_ms)

    def anima_turn(self, prefix: str) -> None:
        if prefix == CLI:
            return self.anima_cli_turn()
        self.count += 1
        since, before = self.log.start(), replies(self.agent)
        tmp = self.staging / f"m{self.count}.md"
        tmp.write_text("---\nfrom: you\n---\nhi\n")
        with Meter(self.proc.pid, [self.home.root]) as m:
            tmp.rename(self.agent / "inbox" / tmp.name)  # the Maildir way
            deadline = time.monotonic() + 600
            while replies(self.agent) == before:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("no reply in outbox/ within 600 s")
                time.sleep(0.002)
        m.record("anima", prefix)
        self.log.done("anima", since, prefix)

    def anima_cli_turn(self) -> None:
        since, before = self.log.start(), replies(self.agent)
        with Meter(self.proc.pid, [self.home.root]) as m:
            anima_cmd(self.home, "send", "a000", "hi")
            deadline = time.monotonic() + 600
            while replies(self.agent) == before:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("no reply in outbox/ within 600 s")
                time.sleep(0.002)
        m.record("anima", CLI)
        self.log.done("anima", since, CLI)

    def claw_turn(self, prefix: str) -> None:
        assert self.gateway is not None and self.claw is not None
        since = self.log.start()
        with Meter(self.gateway.proc.pid, [self.claw.root]) as m:
            if prefix == CLI:
                text = reply_text(
                    self.claw.cli("agent", "--agent", "main", "--message", "hi", "--json")
                )
            else:
                text = self.gateway.send("hi")
        if "ok" not in text:
            raise RuntimeError(f"the gateway replied {text!r}, not the fake's 'ok'")
        m.record("openclaw", prefix)
        self.log.done("openclaw", since, prefix)

    def run(self, n: int, idle_s: float) -> None:
        for prefix, rounds in ((FIRST, 1), (LIVE, n), (CLI, n)):
            turns: dict[str, Callable[[], None]] = {"anima": lambda p=prefix: self.anima_turn(p)}
            if self.gateway is not None:
                turns["openclaw"] = lambda p=prefix: self.claw_turn(p)
            alternate("turn through the long-running process", rounds, turns)
            if "openclaw" not in turns:
                self.stop_gateway()
        self.log.close()
        pids = {"anima": self.proc.pid}
        if self.gateway is not None:
            pids["openclaw"] = self.gateway.proc.pid
        idle(self.fake, pids, idle_s)

    def stop_gateway(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        self.stop_gateway()
        shutil.rmtree(self.home.root.parent, ignore_errors=True)


def idle(fake: FakeModelServer, pids: dict[str, int], seconds: float) -> None:
    """Both processes idle over the same window, after a 5 s settle."""
    note(f"idle: {seconds:.0f} s, both long-running processes at once")
    time.sleep(5)
    since = len(fake.requests)
    c0 = {t: cpu_seconds(descendants(p)) for t, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    for tool, pid in pids.items():
        tree = descendants(pid)
        cpu = (cpu_seconds(tree) - c0[tool]) / elapsed * 100
        add(IDLE, "CPU, process tree (% of one core)", tool, cpu)
        add(IDLE, "RSS, main process (MiB)", tool, status_kib(pid, "VmRSS") / 1024)
        rss = sum(status_kib(p, "VmRSS") for p in tree) / 1024
        add(IDLE, "RSS, process tree, summed (MiB)", tool, rss)
        add(IDLE, "processes in the tree", tool, len(tree))
        key = ANIMA_KEY if tool == "anima" else CLAW_KEY
        reqs = sum(1 for r in fake.requests[since:] if key_of(r) == key)
        add(IDLE, "model requests while idle", tool, reqs)


# -- the report ----------------------------------------------------------------------------------


def fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if abs(v) >= 100 or v == int(v):
        return f"{v:,.0f}"
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def ratio(a: float | None, o: float | None) -> str:
    """Anima / OpenClaw; below 0.1 as 1/N, OpenClaw's figure being N times Anima's."""
    if a is None or not o:
        return "—"
    if a / o >= 0.1:
        return f"{a / o:.2f}x"
    return f"1/{o / a:,.0f}" if a else "0"


def report(args: argparse.Namespace, started: str, claw_info: str) -> None:
    print()
    print(f"Anima vs OpenClaw, {started}; {args.turns} turns each; medians; {claw_info}")
    for section in SECTIONS:
        if section not in samples:
            continue
        print(f"\n{section}\n  {'':<40} {'Anima':>10} {'OpenClaw':>10} {'ratio':>8}  n")
        for figure, by_tool in samples[section].items():
            med = {t: statistics.median(v) for t, v in by_tool.items() if v}
            a, o = med.get("anima"), med.get("openclaw")
            n = "/".join(str(len(by_tool.get(t, []))) for t in TOOLS)
            print(f"  {figure:<40} {fmt(a):>10} {fmt(o):>10} {ratio(a, o):>8}  {n}")
    print()
    for phase, whys in missing.items():
        for tool, why in whys.items():
            print(f"NOT MEASURED ({tool}, {phase}): {why}")
    print(
        "ratio = Anima / OpenClaw (1/N: OpenClaw's figure is N times Anima's). CPU is counted in "
        "10 ms clock ticks. Request characters: the JSON body the fake server received. "
        "Bytes written: the kernel's write_bytes for the process tree (pages dirtied, with "
        "children it reaped, e.g. git); directory growth: apparent size of the tool's own "
        "throwaway home/state directory (OpenClaw also logs to /tmp/openclaw/)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=5, help="turns per tool and measurement")
    parser.add_argument("--idle", type=float, default=30.0, help="idle window, seconds")
    parser.add_argument("--json", type=Path, help="also write every sample to this file")
    args = parser.parse_args()
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load0 = os.getloadavg()[0]
    note(f"{os.cpu_count()} cores, load {load0:.2f}, Python {platform.python_version()}")
    found = ensure_openclaw()
    with FakeModelServer(default=Reply("ok")) as fake:
        claws: dict[str, Claw] = {}
        if isinstance(found, str):
            claw_info = f"OpenClaw unavailable: {found}"
            missing["install"]["openclaw"] = found
        else:
            node_dir, entry = found
            version = subprocess.run(
                [str(entry), "--version"],
                capture_output=True,
                text=True,
                env=dict(os.environ, PATH=node_dir + os.pathsep + os.environ["PATH"]),
            ).stdout.strip()
            claw_info = (
                f"{version}, Node {'.'.join(map(str, node_version(Path(node_dir) / 'node') or ()))}"
            )
            try:
                for label in ("cli", "gateway"):
                    note(f"openclaw onboard ({label} state directory)")
                    claws[label] = Claw(node_dir, entry, fake.url, label)
            except Exception as e:  # noqa: BLE001
                missing["setup"]["openclaw"] = str(e)
                claw_info = f"OpenClaw set-up failed: {e}"
                claws = {}
        try:
            note("one-shot CLI turns")
            one_shot(fake, claws.get("cli"), args.turns)
            note("turns through the long-running processes")
            live = Live(fake, claws.get("gateway"))
            try:
                live.run(args.turns, args.idle)
            finally:
                live.stop()
        finally:
            for c in claws.values():
                shutil.rmtree(c.root, ignore_errors=True)
    claw_info += f"; {os.cpu_count()} cores, load {load0:.1f} → {os.getloadavg()[0]:.1f}"
    report(args, started, claw_info)
    if args.json:
        raw = {"started": started, "openclaw": claw_info, "samples": samples, "missing": missing}
        args.json.write_text(json.dumps(raw, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
