"""A fake Telegram Bot API server on 127.0.0.1 for tests: python-telegram-bot talks real HTTP to
it (`base_url`). It queues updates for getUpdates (long polling, offsets acknowledged as Telegram
does), records what the bot sends, and injects faults: HTTP errors, rate limits, and requests
that never get an answer (a black hole, for killing an adapter mid-send)."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BOT = {"id": 999000, "is_bot": True, "first_name": "Arya", "username": "arya_bot"}
_RAW = {"text", "action"}  # string parameters PTB does not JSON-encode


@dataclass
class Sent:
    chat_id: int
    text: str
    reply_to: int | None
    message_id: int


@dataclass
class FakeTelegram:
    token: str = "123456:TEST-TOKEN"
    updates: list[dict[str, Any]] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    actions: list[tuple[int, str]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    pushed: list[dict[str, Any]] = field(default_factory=list)
    """Every update ever queued (to send one again, as Telegram does with unacknowledged ones)."""
    faults: deque[dict[str, Any]] = field(default_factory=deque)
    """Applied to the next sendMessage calls (to `chat`, when given), one each: {"status": 500},
    {"status": 429, "retry_after": 1}, {"hang": True}, or {} for a normal answer."""

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._next_update = 1
        self._next_message = 100
        self._server: ThreadingHTTPServer | None = None

    # -- test side -------------------------------------------------------------------------
    def push(
        self,
        text: str,
        *,
        user: int = 42,
        chat: int | None = None,
        chat_type: str = "private",
        caption: bool = False,
        first_name: str = "Ada",
        is_bot: bool = False,
        reply_to_bot: bool = False,
    ) -> int:
        """Queue an incoming message; returns its message_id."""
        with self._cond:
            self._next_message += 1
            msg: dict[str, Any] = {
                "message_id": self._next_message,
                "date": int(time.time()),
                "chat": {"id": chat if chat is not None else user, "type": chat_type},
                "from": {"id": user, "is_bot": is_bot, "first_name": first_name},
                ("caption" if caption else "text"): text,
            }
            if caption:
                msg["photo"] = [{"file_id": "p1", "file_unique_id": "u1", "width": 90, "height": 90}]
            if reply_to_bot:
                msg["reply_to_message"] = {
                    "message_id": 1,
                    "date": int(time.time()),
                    "chat": msg["chat"],
                    "from": BOT,
                    "text": "earlier",
                }
            self.updates.append({"update_id": self._next_update, "message": msg})
            self.pushed.append(self.updates[-1])
            self._next_update += 1
            self._cond.notify_all()
            return self._next_message

    def wait_sent(self, n: int, timeout: float = 20.0) -> list[Sent]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.sent) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"bot sent {len(self.sent)} messages, expected {n}: {self.sent}")
                self._cond.wait(left)
            return list(self.sent)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeTelegram:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- server side -----------------------------------------------------------------------
    def get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        deadline = time.monotonic() + timeout
        with self._cond:
            if offset:
                self.updates = [u for u in self.updates if u["update_id"] >= offset]  # acknowledged
            while not self.updates and not self._stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
            return list(self.updates)

    def _fault_for(self, chat_id: int) -> dict[str, Any] | None:
        with self._cond:
            for fault in self.faults:
                if fault.get("chat") in (None, chat_id):
                    self.faults.remove(fault)
                    return fault
        return None

    def send_message(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        chat_id = int(params["chat_id"])
        fault = self._fault_for(chat_id)
        if fault and fault.get("hang"):
            self._stopping.wait()  # never answers, never delivers
            return 500, {"ok": False, "error_code": 500, "description": "stopped"}
        if fault and fault.get("status"):
            status = int(fault.get("status", 500))
            body: dict[str, Any] = {"ok": False, "error_code": status, "description": fault.get("description", "Internal Server Error")}
            if fault.get("retry_after") is not None:
                body["parameters"] = {"retry_after": fault["retry_after"]}
            return status, body
        reply = params.get("reply_parameters") or {}
        with self._cond:
            self._next_message += 1
            self.sent.append(Sent(chat_id, params["text"], reply.get("message_id"), self._next_message))
            self._cond.notify_all()
            mid = self._next_message
        return 200, {
            "ok": True,
            "result": {
                "message_id": mid,
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private"},
                "from": BOT,
                "text": params["text"],
            },
        }


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeTelegram
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _reply(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the adapter was stopped or killed mid-request

    def _params(self) -> dict[str, Any]:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        if "json" in (self.headers.get("Content-Type") or ""):
            return json.loads(raw or "{}")
        out: dict[str, Any] = {}
        for key, value in urllib.parse.parse_qsl(raw):
            if key in _RAW:
                out[key] = value
            else:
                try:
                    out[key] = json.loads(value)
                except ValueError:
                    out[key] = value
        return out

    def do_POST(self) -> None:  # noqa: N802
        fake = self.server_fake
        _, _, rest = self.path.partition("/bot")
        token, _, method = rest.partition("/")
        params = self._params()
        fake.calls.append(method)
        if token != fake.token:
            self._reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        elif method == "getMe":
            self._reply(200, {"ok": True, "result": BOT})
        elif method == "getUpdates":
            self._reply(200, {"ok": True, "result": fake.get_updates(params)})
        elif method == "sendMessage":
            self._reply(*fake.send_message(params))
        elif method == "sendChatAction":
            fake.actions.append((int(params["chat_id"]), params.get("action", "")))
            self._reply(200, {"ok": True, "result": True})
        else:
            self._reply(200, {"ok": True, "result": True})

    do_GET = do_POST
