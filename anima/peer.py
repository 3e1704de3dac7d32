"""Peers: other Anima homes, addressed `agent@peer` (DESIGN §7a, "across machines").

A peer is reached the way git reaches a remote: over SSH, running `anima serve-peer` on the
other side and speaking JSON lines on its stdin/stdout (one session kept open: a warm
connection); over HTTP(S), POSTing to the other home's webhook channel, each request signed
with the HMAC secret both homes share; or, for another home on this machine, running
`anima serve-peer --home PATH` directly. Every request is `{"op", "from", ...}` and every
answer `{"ok": true, ...}` or `{"ok": false, "error", "permanent"}` (see peer_ops).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
import select
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

from anima.config import PeerConfig
from anima.errors import AnimaError, BadConfig
from anima.home import Home

if TYPE_CHECKING:
    import http.client

log = logging.getLogger(__name__)

_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"
PEER_NAME = re.compile(rf"^{_NAME}$")
ADDRESS = re.compile(rf"^([a-z0-9][a-z0-9_-]*)@({_NAME})$")
"""`agent@peer`: an agent of another home."""
ERROR_LINE = 1024
"""The most of one line of a peer's stderr kept for an error message."""
MAX_LINE = 4 * 1024 * 1024
"""The longest request or answer line (a message is at most 1 MiB, JSON-escaped)."""
CALL_TIMEOUT = 30.0


_CHECK_URL = "check url in [peers.{}] of this home's anima.toml"


class PeerError(AnimaError):
    """A peer could not be reached or refused a request. `permanent`: asking again is useless
    (no such agent there, a message it will never accept); otherwise retry later."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def split_address(to: str) -> tuple[str, str] | None:
    """(agent, peer) for `agent@peer`, else None."""
    m = ADDRESS.match(to)
    return (m.group(1), m.group(2)) if m else None


def spool_name(peer: str) -> str:
    """The spool a peer's outgoing messages wait in: spool/peer-NAME/."""
    return f"peer-{peer}"


def this_host(home: Home) -> str:
    """This home's name as its peers know it: `host_name` in anima.toml, else the machine's."""
    return home.config().host_name or socket.gethostname().split(".")[0] or "localhost"


def config(home: Home, name: str) -> PeerConfig:
    """The `[peers.NAME]` table, checked; BadConfig names the peers there are."""
    peers = home.config().peers
    if name not in peers:
        known = ", ".join(sorted(peers)) or "none"
        raise BadConfig(f"no peer {name!r} in {home.config_path} (peers: {known})")
    cfg = peers[name]
    if not PEER_NAME.match(name):
        raise BadConfig(f"[peers.{name}]: a peer name is letters, digits, '.', '_' or '-'")
    scheme = urlsplit(cfg.url).scheme
    if scheme not in ("ssh", "http", "https", "file"):
        raise BadConfig(
            f"[peers.{name}] url must be ssh://, http(s):// or file://, not {cfg.url[:80]!r}"
        )
    try:
        urlsplit(cfg.url).port  # noqa: B018 (a port that is not a number raises here)
    except ValueError as exc:
        raise BadConfig(f"[peers.{name}] url {cfg.url[:80]!r}: {exc}") from None
    if scheme in ("http", "https") and not cfg.secret_env:
        raise BadConfig(f"[peers.{name}] is an HTTP peer: it needs secret_env (the HMAC secret)")
    return cfg


class Transport(Protocol):
    def call(self, request: dict[str, Any], timeout: float = CALL_TIMEOUT) -> dict[str, Any]: ...

    def close(self) -> None: ...


def _answer(raw: bytes, where: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise PeerError(f"{where}: not an answer: {raw[:120]!r} ({exc})") from None
    if not isinstance(data, dict):
        raise PeerError(f"{where}: not an answer: {raw[:120]!r}")
    if not data.get("ok"):
        why = str(data.get("error") or "refused, without a reason")
        raise PeerError(f"{where}: {why}", permanent=bool(data.get("permanent")))
    return data


class PipeTransport:
    """A resident `anima serve-peer` over SSH (or run locally): one request line, one answer
    line. Started on first use and again after it died; one call at a time."""

    def __init__(self, name: str, argv: list[str], home: Path | None = None):
        self.name = name
        self.argv = argv
        self.home = home
        """A file:// peer's home: looked for before each start, for a clear error."""
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()
        self.buffer = b""
        self.errors: collections.deque[str] = collections.deque(maxlen=20)
        self.rid = 0
        self.stray = b""
        """The last line that was not an answer (said when no answer comes)."""

    def _start(self) -> subprocess.Popen[bytes]:
        if self.proc is None or self.proc.poll() is not None:
            if self.home is not None and not (self.home / "anima.toml").is_file():
                where = _CHECK_URL.format(self.name)
                raise PeerError(f"peer {self.name}: no Anima home at {self.home}: {where}")
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                    env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
                )
            except OSError as exc:
                raise PeerError(f"peer {self.name}: cannot run {self.argv[0]}: {exc}") from exc
            self.buffer = b""
            threading.Thread(target=self._read_errors, args=(self.proc,), daemon=True).start()
        return self.proc

    def _fail(self, why: str) -> PeerError:
        """Stop the session (the next call starts a new one) and say what went wrong, with the
        last line the other side (or ssh) wrote to stderr."""
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
        last = self.errors[-1] if self.errors else ""
        hint = f" ({_CHECK_URL.format(self.name)})" if "no Anima home" in last else ""
        return PeerError(f"peer {self.name}: {why}" + (f": {last[:300]}{hint}" if last else ""))

    def _read_errors(self, proc: subprocess.Popen[bytes]) -> None:
        """Keep the last lines of stderr, each cut to ERROR_LINE bytes (read always, so a
        chatty remote never blocks; a flood without line breaks is never held whole)."""
        assert proc.stderr is not None
        fd, partial = proc.stderr.fileno(), b""
        while chunk := os.read(fd, 65536):
            *lines, partial = (partial + chunk).split(b"\n")
            partial = partial[:ERROR_LINE]
            for raw in lines:
                if line := raw[:ERROR_LINE].decode("utf-8", "replace").strip():
                    self.errors.append(line)
        if line := partial.decode("utf-8", "replace").strip():
            self.errors.append(line)

    def _readline(self, proc: subprocess.Popen[bytes], deadline: float) -> bytes:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                said = f" (it wrote instead: {self.stray!r})" if self.stray else ""
                raise self._fail(f"no answer in time{said}")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise self._fail("the connection closed")
            self.buffer += chunk
            if len(self.buffer) > MAX_LINE:
                raise self._fail("answer too long")
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def call(self, request: dict[str, Any], timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
        """One request, one answer. Each request carries an id the answer must echo: a stray
        line (a login banner) or a late answer ends the session, never answers another
        request."""
        with self.lock:
            proc = self._start()
            assert proc.stdin is not None
            self.rid += 1
            try:
                proc.stdin.write(json.dumps({**request, "rid": self.rid}).encode() + b"\n")
                proc.stdin.flush()
            except OSError as exc:
                raise self._fail(f"cannot send ({exc})") from None
            deadline = time.monotonic() + timeout
            while True:
                line = self._readline(proc, deadline)
                try:
                    data = json.loads(line)
                except (ValueError, RecursionError):
                    data = None
                if isinstance(data, dict) and "rid" in data:
                    break
                self.stray = line[:120]  # a login banner, a shell's noise: not an answer
            if data.get("rid") != self.rid:
                raise self._fail(f"an answer to another request: {line[:120]!r}")
            self.stray = b""
            return _answer(line, f"peer {self.name}")

    def close(self) -> None:
        with self.lock:
            proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class HttpTransport:
    """POST /v1/peer on the other home's webhook channel, HMAC-signed; keep-alive."""

    def __init__(self, name: str, url: str, key: str):
        import http.client

        self.http = http.client
        parts = urlsplit(url)
        self.name = name
        self.secure = parts.scheme == "https"
        self.netloc = parts.netloc
        self.path = parts.path.rstrip("/") + "/v1/peer"
        self.key = key
        self.conn: http.client.HTTPConnection | None = None
        self.lock = threading.Lock()

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.conn is None:
            cls = self.http.HTTPSConnection if self.secure else self.http.HTTPConnection
            self.conn = cls(self.netloc, timeout=timeout)
        self.conn.timeout = timeout
        return self.conn

    def call(self, request: dict[str, Any], timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
        from anima.signing import SIG_HEADER, TS_HEADER, signature

        # A nonce: two identical requests in one second (a poll) must not sign the same,
        # or the second would be refused as a replay.
        # `to`: the home it is meant for, under the signature, so it cannot be replayed to
        # another home that shares the secret.
        body = json.dumps({**request, "to": self.name, "nonce": os.urandom(8).hex()}).encode()
        with self.lock:
            for attempt in (1, 2):  # a keep-alive connection the server closed: once more
                ts = str(int(time.time()))
                headers = {
                    "Content-Type": "application/json",
                    TS_HEADER: ts,
                    SIG_HEADER: signature(self.key, ts, "POST", self.path, body),
                }
                try:
                    conn = self._connection(timeout)
                    conn.request("POST", self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    raw = resp.read(MAX_LINE + 1)
                    break
                except (OSError, self.http.HTTPException) as exc:
                    self.close_connection()
                    if attempt == 2 or isinstance(exc, TimeoutError | ConnectionRefusedError):
                        raise PeerError(f"peer {self.name}: {type(exc).__name__}: {exc}") from None
        where = f"peer {self.name} (HTTP {resp.status})"
        if resp.status in (408, 429) or resp.status >= 500:
            raise PeerError(f"{where}: {raw[:200].decode('utf-8', 'replace')}")
        if resp.status >= 300 and not raw.startswith(b"{"):  # a wrong URL, a body too large
            raise PeerError(f"{where}: {raw[:200].decode('utf-8', 'replace')}", permanent=True)
        return _answer(raw, where)

    def close_connection(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        with self.lock:
            self.close_connection()


def _ssh_argv(name: str, cfg: PeerConfig) -> list[str]:
    parts = urlsplit(cfg.url)
    if not parts.hostname or parts.hostname.startswith("-") or (parts.username or "").startswith("-"):
        raise BadConfig(f"[peers.{name}] url {cfg.url[:80]!r} has no usable host")
    target = f"{parts.username}@{parts.hostname}" if parts.username else parts.hostname
    path = unquote(parts.path)
    if path.startswith("/~"):
        path = path[1:]  # ssh://host/~/.anima: relative to the remote home directory
    remote = shlex.split(cfg.remote_command)
    if path not in ("", "/"):
        remote += ["--home", path]
    remote.append("serve-peer")
    quoted = " ".join("~/" + shlex.quote(a[2:]) if a.startswith("~/") else shlex.quote(a) for a in remote)
    port = ["-p", str(parts.port)] if parts.port else []
    return [*cfg.ssh_command, "-o", "BatchMode=yes", *port, "--", target, quoted]


def connect(home: Home, name: str) -> Transport:
    """A transport to peer `name` (not connected until its first call)."""
    cfg = config(home, name)
    parts = urlsplit(cfg.url)
    if parts.scheme == "ssh":
        return PipeTransport(name, _ssh_argv(name, cfg))
    if parts.scheme == "file":
        path = Path(unquote(parts.path)).expanduser()
        # The default command: this very Anima (a venv's `anima` is seldom on PATH).
        command = shlex.split(cfg.remote_command) if cfg.remote_command != "anima" else [
            sys.executable, "-m", "anima"
        ]
        return PipeTransport(name, [*command, "--home", str(path), "serve-peer"], home=path)
    from anima.credentials import secret

    key = secret(home, cfg.secret_env, f"the HMAC secret of peer {name}")
    return HttpTransport(name, cfg.url, key)


def call(home: Home, name: str, op: str, *, timeout: float = CALL_TIMEOUT, **args: Any) -> dict[str, Any]:
    """One request to peer `name` on a connection of its own; PeerError when it fails."""
    transport = connect(home, name)
    try:
        return transport.call(request(home, op, **args), timeout)
    finally:
        transport.close()


def send(home: Home, address: str, text: str, *, conversation: str | None = None) -> str:
    """A person's message to `agent@peer` (`anima send`): delivered now, or PeerError.
    Returns its id."""
    remote = split_address(address)
    if remote is None:
        raise BadConfig(f"{address[:80]!r} is not NAME@PEER")
    agent, name = remote
    timeout = config(home, name).delivery.send_timeout
    answer = call(
        home, name, "chat_send", timeout=timeout, agent=agent, text=text,
        conversation=conversation or "cli",
    )
    return str(answer["id"])


def request(home: Home, op: str, **args: Any) -> dict[str, Any]:
    return {"op": op, "from": this_host(home), **args}
