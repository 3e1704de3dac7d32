"""The shell tool's sandbox: bubblewrap (`bwrap`, Debian package bubblewrap).

A command sees the machine read-only, its workspace read-write, and nothing of $ANIMA_HOME (other
agents, credentials.env, its own .git), of the runtime user's home, /tmp or /run; it runs in its
own process, network, IPC and UTS namespaces (no view of the runtime's processes or their
environment, no network unless allowed) with an environment of a few fixed variables. Where
bwrap cannot run, shell is refused unless the agent's config says `unsafe = true`.
"""

from __future__ import annotations

import functools
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROBE_TIMEOUT = 10.0
CANCEL_POLL = 0.1
"""How often a running command checks whether the runtime is shutting down."""
KILL_WAIT = 5.0
"""After a kill, how long to wait for the output pipe to close before giving up on it."""


def minimal_env(workspace: Path) -> dict[str, str]:
    """The whole environment a command gets: nothing inherited, so no secret can ride along."""
    return {
        "PATH": PATH,
        "HOME": str(workspace),
        "PWD": str(workspace),
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
    }


def bwrap() -> str | None:
    return shutil.which("bwrap")


@functools.cache
def _probe(path: str) -> str | None:
    """Why bwrap at `path` cannot make a sandbox here (None: it can). Run once per process."""
    argv = [path, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/"]
    argv += ["--proc", "/proc", "--dev", "/dev", "true"]
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=PROBE_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{path} does not run: {exc}"
    if proc.returncode != 0:
        return f"{path} cannot create a sandbox here: {proc.stderr.decode(errors='replace')}"
    return None


def unavailable() -> str | None:
    """Why no sandbox can run on this machine, or None when one can."""
    path = bwrap()
    if path is None:
        return "bubblewrap (bwrap) is not installed"
    return _probe(path)


def refusal(unsafe: bool) -> str | None:
    """The error for enabling shell here, or None when shell may run (sandboxed, or unsafe)."""
    why = None if unsafe else unavailable()
    if why is None:
        return None
    return (
        f"[tools.shell] is enabled but no sandbox is available ({why.strip()}). Install "
        "bubblewrap (apt-get install bubblewrap), or set [tools.shell] unsafe = true to run "
        "commands without a sandbox, with the runtime's own access to this machine."
    )


def command(
    argv: list[str],
    *,
    workspace: Path,
    hidden: list[Path],
    network: bool,
    read_only: Sequence[tuple[Path, PurePosixPath]] = (),
) -> list[str]:
    """`argv` wrapped in bwrap: / read-only, `hidden` folders replaced by empty ones (parents
    first, so a nested one is hidden too), each `read_only` (folder, where) shown read-only at
    `where` (inside a hidden folder, as only those can take new mount points), `workspace`
    read-write at its own path."""
    out = [bwrap() or "bwrap", "--unshare-all", "--die-with-parent", "--new-session"]
    if network:
        out.append("--share-net")
    out += ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    for path in sorted({p.resolve() for p in hidden if p.resolve() != Path("/")}, key=_depth):
        out += ["--tmpfs", str(path)]
    resolv = Path("/etc/resolv.conf").resolve()
    if network and any(resolv.is_relative_to(p.resolve()) for p in hidden):
        out += ["--ro-bind-try", str(resolv), str(resolv)]  # e.g. systemd-resolved's, in /run
    for folder, where in read_only:
        out += ["--ro-bind-try", str(folder), str(where)]
    ws = str(workspace.resolve())
    out += ["--bind", ws, ws, "--chdir", ws, "--clearenv"]
    for key, value in minimal_env(workspace.resolve()).items():
        out += ["--setenv", key, value]
    return [*out, "--", *argv]


def _depth(path: Path) -> int:
    return len(path.parts)


@dataclass(frozen=True)
class Finished:
    returncode: int | None
    """None when the command was killed at its timeout."""
    output: bytes
    cut: bool
    """More output than `max_bytes` came; the rest was read and dropped."""


def run(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    timeout: float,
    max_bytes: int,
    cancel: threading.Event | None = None,
) -> Finished:
    """Run `argv` in a new session with stdout and stderr merged, keeping at most `max_bytes`
    of output in memory. At the timeout, or as soon as `cancel` is set (the runtime is shutting
    down), the whole process group is killed. Every wait is bounded, even on a child that
    leaves the pipe open behind it."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    kept = bytearray()
    cut = timed_out = False
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if cancel is not None and cancel.is_set() and not timed_out:
                left = 0
            if left <= 0:
                if timed_out:
                    break  # killed, and the pipe is still open after KILL_WAIT: stop reading
                timed_out = True
                _kill_group(proc)
                deadline = time.monotonic() + KILL_WAIT
                continue
            if not sel.select(min(left, CANCEL_POLL)):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            room = max_bytes - len(kept)
            cut = cut or len(chunk) > room
            kept += chunk[: max(room, 0)]
    proc.stdout.close()
    if not timed_out:
        try:
            proc.wait(timeout=KILL_WAIT)
        except subprocess.TimeoutExpired:  # output closed but the process lives on
            timed_out = True
    if timed_out:
        _kill_group(proc)
        proc.wait()
    return Finished(None if timed_out else proc.returncode, bytes(kept), cut)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
