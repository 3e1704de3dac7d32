"""The webhook adapter over real HTTP, run as systemd runs it (a subprocess)."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from anima import router
from anima.channels.webhook import SIG_HEADER, TS_HEADER, signature
from anima.home import Home
from anima.message import Message
from anima.testing import FakeModelServer
from anima.testing.fake_model import echo_responder
from tests.conftest import (
    ChannelProcess,
    LiveRuntime,
    add_channel,
    make_agent,
    wait_for,
    write_global_config,
)

TOKEN = "tok-" + "x" * 32
SECRET = "sec-" + "y" * 32
HOOK_ENV = {"HOOK_TOKEN": TOKEN, "HOOK_SECRET": SECRET}
FAST = {"backoff": 0.05, "max_backoff": 0.3, "send_timeout": 3.0, "max_attempts": 3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hook(home: Home, fake: FakeModelServer) -> Iterator[tuple[Home, str]]:
    with webhook_adapter(home, fake) as url:
        yield home, url


@contextlib.contextmanager
def webhook_adapter(home: Home, fake: FakeModelServer, **extra: object) -> Iterator[str]:
    with webhook_process(home, fake, **extra) as (_, url):
        yield url


@contextlib.contextmanager
def webhook_process(home: Home, fake: FakeModelServer, **extra: object) -> Iterator[tuple[ChannelProcess, str]]:
    """`anima channel webhook` serving arya, with `extra` [channels.webhook] settings."""
    fake.responder = echo_responder
    make_agent(home, "arya")
    port = free_port()
    settings = {
        "port": port, "agents": ["arya"], "token_env": "HOOK_TOKEN", "secret_env": "HOOK_SECRET",
        "max_body": 4096, "replay_window": 60,
    }
    add_channel(home, "webhook", delivery=FAST, **(settings | extra))
    with ChannelProcess(home, "webhook", HOOK_ENV) as process:
        yield process, f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def shared_webhook(tmp_path_factory: pytest.TempPathFactory, **extra: object) -> Iterator[tuple[Home, ChannelProcess, str]]:
    """An adapter in a home of its own, for a module-scoped fixture shared by many cases."""
    home = Home(tmp_path_factory.mktemp("hook") / "home")
    home.init()
    with FakeModelServer() as fake:
        write_global_config(home, fake.url)
        with webhook_process(home, fake, **extra) as (process, url):
            yield home, process, url


def call(url: str, method: str = "GET", body: bytes = b"", headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body if method == "POST" else None, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


def signed(path: str, body: bytes, method: str = "POST", ts: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if ts is None else ts)
    return {TS_HEADER: stamp, SIG_HEADER: signature(SECRET, stamp, method, path, body), "Content-Type": "application/json"}


BEARER = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
PATH = "/v1/agents/arya/messages"


def inbox(home: Home) -> list[Path]:
    return sorted((home.agents_dir / "arya" / "inbox").glob("*.md"))


def test_unauthenticated_or_badly_signed_requests_get_401_and_leave_no_file(hook: tuple[Home, str]) -> None:
    home, url = hook
    body = json.dumps({"text": "let me in"}).encode()
    assert call(url + PATH, "POST", body, {"Content-Type": "application/json"})[0] == 401
    assert call(url + PATH, "POST", body, {"Authorization": "Bearer wrong"})[0] == 401
    bad = signed(PATH, body)
    bad[SIG_HEADER] = signature("not-the-secret", bad[TS_HEADER], "POST", PATH, body)
    assert call(url + PATH, "POST", body, bad)[0] == 401
    tampered = signed(PATH, body)
    assert call(url + PATH, "POST", json.dumps({"text": "changed"}).encode(), tampered)[0] == 401
    assert inbox(home) == []


def test_old_or_replayed_signatures_are_refused(hook: tuple[Home, str]) -> None:
    home, url = hook
    body = json.dumps({"text": "hello"}).encode()
    status, answer = call(url + PATH, "POST", body, signed(PATH, body, ts=int(time.time()) - 3600))
    assert status == 401 and "window" in answer["error"]
    fresh = signed(PATH, body)
    assert call(url + PATH, "POST", body, fresh)[0] == 202
    status, answer = call(url + PATH, "POST", body, fresh)  # the same request again
    assert status == 401 and "replayed" in answer["error"]
    assert len(inbox(home)) == 1


def test_oversize_body_gets_413_and_leaves_no_file(hook: tuple[Home, str]) -> None:
    home, url = hook
    body = json.dumps({"text": "x" * 10_000}).encode()
    assert call(url + PATH, "POST", body, BEARER)[0] == 413
    assert inbox(home) == []


def test_bad_bodies_and_unknown_agents_are_clear_errors(hook: tuple[Home, str]) -> None:
    home, url = hook
    status, answer = call(url + PATH, "POST", b"{not json", BEARER)
    assert status == 400 and "JSON" in answer["error"]
    status, answer = call(url + PATH, "POST", json.dumps({"txt": "typo"}).encode(), BEARER)
    assert status == 400 and '"text"' in answer["error"]
    status, _ = call(url + "/v1/agents/nobody/messages", "POST", json.dumps({"text": "hi"}).encode(), BEARER)
    assert status == 404
    assert inbox(home) == []


def test_good_request_is_answered_and_the_reply_is_retrievable(hook: tuple[Home, str]) -> None:
    home, url = hook
    body = json.dumps({"text": "what is 6 times 7?", "from": "ci-bot"}).encode()
    with LiveRuntime(home):
        status, answer = call(url + PATH, "POST", body, signed(PATH, body))
        assert status == 202 and answer["status"] == "pending"
        reply_path = answer["reply_url"]

        def answered() -> Any:
            code, record = call(url + reply_path, headers={"Authorization": f"Bearer {TOKEN}"})
            return record if code == 200 and record["status"] == "answered" else None

        record = wait_for(answered, what="reply")
    assert record["id"] == answer["id"]
    assert [r["text"] for r in record["replies"]] == ["echo: what is 6 times 7?"]
    (msg_file,) = (home.agents_dir / "arya" / "archive").rglob("*.md")
    assert "from: webhook:ci-bot" in msg_file.read_text()
    code, _ = call(url + "/v1/messages/20260101T000000000Z-000000", headers={"Authorization": f"Bearer {TOKEN}"})
    assert code == 404
    get_path = reply_path
    assert call(url + get_path, headers=signed(get_path, b"", "GET"))[0] == 200
    assert call(url + get_path)[0] == 401


def test_plain_text_body_is_accepted(hook: tuple[Home, str]) -> None:
    home, url = hook
    status, _ = call(url + PATH, "POST", b"just text", {"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/plain"})
    assert status == 202
    (path,) = inbox(home)
    assert path.read_text().endswith("just text\n")


class Receiver:
    """A local HTTP endpoint for the outgoing webhook: answers with scripted statuses."""

    def __init__(self, statuses: list[int]):
        self.statuses = statuses
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/anima"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def reply_record(text: str) -> Message:
    return Message.create(sender="arya", to="webhook:ci-bot", body=text, channel="webhook")


def test_outgoing_webhook_is_signed_and_retried(home: Home, fake: FakeModelServer) -> None:
    receiver = Receiver([503, 200])
    try:
        with webhook_adapter(home, fake, outgoing_url=receiver.url):
            router.route(home, [reply_record("pushed to you")])
            wait_for(lambda: list((home.spool_dir / "webhook" / "sent").rglob("*.md")), what="sent")
    finally:
        receiver.close()
    assert len(receiver.received) == 2
    headers, body = receiver.received[-1]
    assert json.loads(body)["text"] == "pushed to you"
    assert headers[SIG_HEADER] == signature(SECRET, headers[TS_HEADER], "POST", "/hooks/anima", body)


def test_outgoing_webhook_is_dead_lettered_after_repeated_failures(home: Home, fake: FakeModelServer) -> None:
    receiver = Receiver([500] * 10)
    try:
        failed = home.spool_dir / "webhook" / "failed"
        with webhook_adapter(home, fake, outgoing_url=receiver.url):
            router.route(home, [reply_record("nobody listens")])
            wait_for(lambda: list(failed.glob("*.error.md")), what="dead letter")
    finally:
        receiver.close()
    assert len(receiver.received) == FAST["max_attempts"]
    (note,) = failed.glob("*.error.md")
    assert "gave up after 3 attempts" in note.read_text() and "500" in note.read_text()


def test_a_second_adapter_for_the_same_channel_refuses_to_start(hook: tuple[Home, str]) -> None:
    home, _ = hook
    env = {**os.environ, "ANIMA_HOME": str(home.root), "HOOK_TOKEN": TOKEN}
    second = subprocess.run([sys.executable, "-m", "anima", "channel", "webhook"], env=env, capture_output=True, text=True, timeout=30)
    assert second.returncode == 1 and "another `anima channel webhook` is live" in second.stderr
    quiet = subprocess.run([sys.executable, "-m", "anima", "channel", "webhook", "--exit-if-live"], env=env, capture_output=True, text=True, timeout=30)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_a_signed_request_cannot_be_replayed_after_a_restart(home: Home, fake: FakeModelServer) -> None:
    body = json.dumps({"text": "only once"}).encode()
    headers = signed(PATH, body)
    with webhook_adapter(home, fake) as url:
        assert call(url + PATH, "POST", body, headers)[0] == 202
    with ChannelProcess(home, "webhook", HOOK_ENV):
        status, answer = call(url + PATH, "POST", body, headers)
    assert status == 401 and "replayed" in answer["error"]
    assert len(inbox(home)) == 1


def test_the_adapter_prunes_old_spool_shards_at_start(home: Home, fake: FakeModelServer) -> None:
    old = home.spool_dir / "webhook" / "requests" / "2020-01"
    old.mkdir(parents=True)
    (old / "20200101T000000000Z-aaaaaa.json").write_text("{}")
    with webhook_adapter(home, fake):
        wait_for(lambda: not old.exists(), what="old shard removed")


# Hostile HTTP: slow and idle clients, too many connections, too few file descriptors, and
# bodies built to break the parser. Raw sockets, so the test controls every byte and pause.

SLOW = {"header_timeout": 0.5, "body_timeout": 1.0, "keepalive_timeout": 2.0}
HEALTH = b"GET /v1/health HTTP/1.1\r\nHost: hook\r\n\r\n"


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def read_until_closed(sock: socket.socket, limit: float, trickle: bytes = b"", every: float = 0.1) -> tuple[float | None, bytes]:
    """Read (sending `trickle` a byte per `every` seconds meanwhile) until the server closes the
    connection: (seconds it took, or None if still open after `limit`; everything read)."""
    start = time.monotonic()
    got = b""
    while (elapsed := time.monotonic() - start) < limit:
        try:
            if trickle:
                sock.sendall(trickle[:1])
                trickle = trickle[1:]
            sock.settimeout(every)
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:  # reset, or a send into a connection the server closed
            return elapsed, got
        if not chunk:
            return elapsed, got
        got += chunk
    return None, got


def test_a_client_trickling_its_headers_is_cut_off(home: Home, fake: FakeModelServer) -> None:
    with webhook_adapter(home, fake, **SLOW) as url, socket.create_connection(("127.0.0.1", port_of(url))) as sock:
        sock.sendall(b"POST " + PATH.encode() + b" HTTP/1.1\r\n")
        closed, _ = read_until_closed(sock, 5.0, trickle=b"X-Slow: " + b"a" * 100)
    assert closed is not None and closed < SLOW["keepalive_timeout"], closed


def test_a_client_trickling_its_body_gets_408_and_is_closed(home: Home, fake: FakeModelServer) -> None:
    body = json.dumps({"text": "x" * 1000}).encode()
    head = f"POST {PATH} HTTP/1.1\r\nHost: hook\r\nAuthorization: Bearer {TOKEN}\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    with webhook_adapter(home, fake, **SLOW) as url, socket.create_connection(("127.0.0.1", port_of(url))) as sock:
        sock.sendall(head.encode())
        closed, answer = read_until_closed(sock, 5.0, trickle=body)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert closed is not None and closed < 4.0
    assert inbox(home) == []


def test_an_idle_keep_alive_connection_is_closed(home: Home, fake: FakeModelServer) -> None:
    with webhook_adapter(home, fake, **SLOW) as url, socket.create_connection(("127.0.0.1", port_of(url))) as sock:
        sock.sendall(HEALTH)
        closed, answer = read_until_closed(sock, 6.0)
    assert answer.startswith(b"HTTP/1.1 200")
    assert closed is not None and SLOW["keepalive_timeout"] - 0.2 < closed < SLOW["keepalive_timeout"] + 2.0, closed


def healthy_over(sock: socket.socket) -> bool:
    """One keep-alive health check over an open connection."""
    sock.sendall(HEALTH)
    sock.settimeout(5)
    return sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_connections_beyond_the_cap_are_refused_at_once_and_the_others_keep_working(home: Home, fake: FakeModelServer) -> None:
    with webhook_adapter(home, fake, max_connections=4) as url:
        held = [socket.create_connection(("127.0.0.1", port_of(url))) for _ in range(4)]
        try:
            assert all(healthy_over(sock) for sock in held)
            with socket.create_connection(("127.0.0.1", port_of(url))) as extra:
                closed, answer = read_until_closed(extra, 3.0)
            assert answer.startswith(b"HTTP/1.1 503") and closed is not None and closed < 1.5, (closed, answer)
            assert healthy_over(held[0])
            held.pop().close()

            def admitted() -> bool:
                with socket.create_connection(("127.0.0.1", port_of(url))) as sock:
                    try:
                        return healthy_over(sock)
                    except OSError:  # refused: the slot is not free yet
                        return False

            wait_for(admitted, timeout=5, what="a freed slot to be reused")
        finally:
            for sock in held:
                sock.close()


def test_running_out_of_file_descriptors_does_not_kill_the_adapter(home: Home, fake: FakeModelServer) -> None:
    with webhook_process(home, fake) as (adapter, url):
        assert adapter.proc is not None
        resource.prlimit(adapter.proc.pid, resource.RLIMIT_NOFILE, (200, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        socks = [socket.create_connection(("127.0.0.1", port_of(url)), timeout=5) for _ in range(300)]
        body = json.dumps({"text": "still here?"}).encode()
        head = f"POST {PATH} HTTP/1.1\r\nHost: hook\r\nAuthorization: Bearer {TOKEN}\r\n"
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        socks[0].sendall(head.encode() + body)
        socks[0].settimeout(5)
        assert socks[0].recv(65536).startswith(b"HTTP/1.1 202")
        for sock in socks:
            sock.close()
        wait_for(lambda: call(url + "/v1/health")[0] == 200, timeout=10, what="health")
        assert adapter.proc.poll() is None
        assert adapter.stop() == 0
    assert "Traceback" not in adapter.output(), adapter.output()
    assert len(inbox(home)) == 1


def test_a_reply_is_readable_only_while_its_agent_is_on_the_webhook(home: Home, fake: FakeModelServer) -> None:
    make_agent(home, "bran")
    body = json.dumps({"text": "for bran"}).encode()
    bran = "/v1/agents/bran/messages"
    with webhook_adapter(home, fake, agents=["arya", "bran"]) as url:
        status, answer = call(url + bran, "POST", body, BEARER)
        assert status == 202 and call(url + answer["reply_url"], headers=BEARER)[0] == 200
    config = home.config_path.read_text()
    home.config_path.write_text(config.replace('agents = ["arya", "bran"]', 'agents = ["arya"]'))
    with ChannelProcess(home, "webhook", HOOK_ENV):
        status, denied = call(url + answer["reply_url"], headers=BEARER)
        assert status == 404 and "no message" in denied["error"]
        assert call(url + bran, "POST", body, BEARER)[0] == 404
        status, own = call(url + PATH, "POST", body, BEARER)
        assert status == 202 and call(url + own["reply_url"], headers=BEARER)[0] == 200


HOSTILE_BODIES = {
    "nested arrays": b"[" * 100_000,
    "nested inside a field": b'{"text": "hi", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    "an array": b'["text"]',
    "a string": b'"text"',
    "null": b"null",
    "a number for text": b'{"text": 5}',
    "a number for from": b'{"text": "hi", "from": 42}',
    "a list for from": b'{"text": "hi", "from": []}',
    "a number for conversation": b'{"text": "hi", "conversation": 7}',
    "infinity for from": b'{"text": "hi", "from": 1e999}',
    "NaN for conversation": b'{"text": "hi", "conversation": NaN}',
    "a 5000-digit number": b'{"text": "hi", "n": ' + b"9" * 5000 + b"}",
    "invalid UTF-8": b'{"text": "\xff\xfe"}',
    "a lone surrogate": b'{"text": "\\ud800"}',
}


@pytest.mark.parametrize("body", HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
def test_hostile_json_bodies_are_clear_400s(big_hook: tuple[Home, str], body: bytes) -> None:
    home, url = big_hook
    before = inbox(home)
    status, answer = call(url + PATH, "POST", body, BEARER)
    assert status == 400 and answer["error"], (status, answer)
    assert inbox(home) == before


@pytest.fixture(scope="module")
def big_hook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Home, str]]:
    """One adapter that accepts large bodies, shared by the hostile-body cases (read-only)."""
    with shared_webhook(tmp_path_factory, max_body=300_000) as (home, _, url):
        yield home, url


def test_a_malformed_request_is_a_400_and_one_log_line_not_a_traceback(home: Home, fake: FakeModelServer) -> None:
    with webhook_process(home, fake) as (adapter, url), socket.create_connection(("127.0.0.1", port_of(url))) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nX-Bad: a\x7fb\r\n\r\n")
        _, answer = read_until_closed(sock, 5.0)
        assert answer.split(b" ", 2)[1] == b"400", answer
        wait_for(lambda: "malformed request" in adapter.output(), what="the log line")
    assert "Traceback" not in adapter.output(), adapter.output()
