"""A fake model server on 127.0.0.1 speaking the Anthropic Messages API (JSON and SSE), Ollama's
/api/chat (JSON and NDJSON streaming) and OpenAI's Chat Completions (JSON and SSE), driven by a
script of replies with injectable faults. Like a real server it refuses a request whose tool-call
history is malformed (a result with no call, a call with no result, a bad id).

Tests point the real `anthropic`, `ollama` and `openai` SDKs at it. Run standalone for subprocess tests:
`python -m anima.testing.fake_model --script replies.json` prints its URL on the first line.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Fault:
    status: int | None = None
    """Answer with this HTTP error status instead of a reply."""
    retry_after: float | None = None
    delay: float = 0.0
    """Seconds to wait before answering (a slow model)."""
    cut: bool = False
    """Stream part of the reply, then drop the connection."""
    message: str = "injected"
    """The error message (e.g. the provider's "prompt is too long" for a context overflow)."""
    code: str = ""
    """Chat Completions only: the error's `code` (e.g. "context_length_exceeded")."""
    in_stream: bool = False
    """Chat Completions only: answer 200, stream the first text delta, then the error as a
    `data: {"error": ...}` event, as OpenRouter does when the model behind it fails."""


@dataclass(frozen=True)
class Reply:
    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """[{"name": ..., "input": {...}}]; for Chat Completions a call may also give its "id"
    (even an empty or odd one, as some servers do), raw "arguments" (e.g. broken JSON) and the
    "index" its deltas carry (None: none at all, as some servers send)."""
    fault: Fault | None = None
    chunk: int = 6
    """Characters per streamed text delta."""
    delay_per_chunk: float = 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reply:
        fault = Fault(**d["fault"]) if d.get("fault") else None
        return cls(
            d.get("text", ""),
            list(d.get("tool_calls", [])),
            fault,
            d.get("chunk", 6),
            d.get("delay_per_chunk", 0.0),
        )


@dataclass(frozen=True)
class Recorded:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float


Responder = Callable[[str, dict[str, Any]], Reply]


def last_user_text(api: str, body: dict[str, Any]) -> str:
    """The text of the newest user message in a request (either wire format)."""
    for m in reversed(body.get("messages", [])):
        if m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            return content
        return "\n".join(b.get("text", "") for b in content if b.get("type") == "text")
    return ""


def echo_responder(api: str, body: dict[str, Any]) -> Reply:
    """Replies `echo: <body of the last message>`: lets a test match replies to messages."""
    text = last_user_text(api, body)
    bodies = re.findall(r"<(?:message|untrusted)\b[^>]*>\n(.*?)\n</", text, re.S)
    return Reply(f"echo: {bodies[-1] if bodies else text}")


ANTHROPIC_TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+")  # used with fullmatch, as "$" allows a "\n"
OPENAI_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def anthropic_problem(body: dict[str, Any]) -> str | None:
    """Why the Messages API would refuse this request's tool history, or None: every tool_use id
    matches its pattern and is answered in the next message, every tool_result answers one."""
    open_ids: set[str] = set()
    for i, m in enumerate(body.get("messages", [])):
        content = m.get("content")
        blocks = content if isinstance(content, list) else []
        results = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
        if results - open_ids:
            return (
                f"messages.{i}: unexpected `tool_use_id` found in `tool_result` blocks: "
                f"{', '.join(map(str, sorted(results - open_ids, key=str)))}. Each `tool_result` "
                "block must have a corresponding `tool_use` block in the previous message."
            )
        if open_ids - results:
            return (
                f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(sorted(open_ids - results))}"
            )
        open_ids = set()
        for b in blocks:
            if b.get("type") != "tool_use":
                continue
            if not ANTHROPIC_TOOL_ID.fullmatch(str(b.get("id", ""))):
                return (
                    f"messages.{i}.content: tool_use.id: String should match pattern "
                    f"'^[a-zA-Z0-9_-]+$', got {b.get('id')!r}"
                )
            open_ids.add(b["id"])
    return None


def openai_problem(body: dict[str, Any]) -> str | None:
    """Why Chat Completions would refuse this request, or None: every tool message answers a
    call of the assistant message before it, every call is answered, arguments are strings."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    for t in body.get("tools") or []:
        name = t.get("function", {}).get("name", "")
        if t.get("type") != "function" or not OPENAI_TOOL_NAME.fullmatch(str(name)):
            return f"Invalid 'tools': {t!r}"
    pending: set[str] = set()
    for i, m in enumerate(body.get("messages", [])):
        role = m.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            return f"Invalid value for 'messages[{i}].role': {role!r}"
        if role == "tool":
            if m.get("tool_call_id") not in pending:
                return (
                    f"Invalid parameter: messages with role 'tool' must be a response to a "
                    f"preceding message with 'tool_calls' (messages[{i}])"
                )
            pending.discard(m["tool_call_id"])
            continue
        if pending:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(sorted(pending))}"
            )
        for j, call in enumerate(m.get("tool_calls") or [] if role == "assistant" else []):
            fn = call.get("function") or {}
            if not call.get("id") or call.get("type") != "function" or not fn.get("name"):
                return f"Invalid 'messages[{i}].tool_calls[{j}]': {call!r}"
            if not isinstance(fn.get("arguments"), str):
                return f"Invalid type for 'messages[{i}].tool_calls[{j}].function.arguments'"
            pending.add(call["id"])
    return None


class FakeModelServer:
    """Use as a context manager; `url` is the base URL for both APIs."""

    def __init__(
        self,
        script: list[Reply] | None = None,
        *,
        default: Reply | None = None,
        responder: Responder | None = None,
        context_chars: int | None = None,
    ):
        """`context_chars` emulates a context window: a request whose system, messages and
        tools are longer (as JSON) is refused the way each API refuses one."""
        self._script: deque[Reply] = deque(script or [])
        self._default = default or Reply("ok")
        self.responder = responder
        self.context_chars = context_chars
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.requests: list[Recorded] = []
        self._server: ThreadingHTTPServer | None = None

    # -- control -------------------------------------------------------------------------------
    def add(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def next_reply(self, api: str, body: dict[str, Any]) -> Reply:
        with self._lock:
            if self._script:
                return self._script.popleft()
        return self.responder(api, body) if self.responder else self._default

    def record(self, rec: Recorded) -> None:
        with self._cond:
            self.requests.append(rec)
            self._cond.notify_all()

    def wait_for_requests(self, n: int, timeout: float = 30.0) -> list[Recorded]:
        """Block until `n` requests have arrived; TimeoutError (never a silent return) if not."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= n, timeout):
                raise TimeoutError(f"{len(self.requests)} of {n} model requests after {timeout}s")
            return list(self.requests)

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self, port: int = 0) -> FakeModelServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pieces(text: str, size: int) -> Iterator[str]:
    for i in range(0, len(text), max(1, size)):
        yield text[i : i + size]


class _Handler(BaseHTTPRequestHandler):
    fake: FakeModelServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else every streamed response costs ~44 ms

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    # -- plumbing ------------------------------------------------------------------------------
    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

    def _chunk(self, data: str) -> None:
        raw = data.encode()
        self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _cut(self) -> None:
        """Drop the connection mid-body, as a crashed proxy or model host would."""
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0].rstrip("/")
        if path == "/api/tags":
            self._json(200, {"models": [{"name": "fake:latest", "model": "fake:latest"}]})
        elif path in ("/v1/models", "/models"):
            model = {"id": "fake", "object": "model", "created": 0, "owned_by": "anima"}
            self._json(200, {"object": "list", "data": [model]})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._json(400, {"error": "bad json"})
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.fake.record(Recorded(self.path, body, headers, time.time()))
        path = self.path.split("?")[0].rstrip("/")
        if path == "/v1/messages":
            if not (
                headers.get("x-api-key") or headers.get("authorization", "").startswith("Bearer ")
            ):
                self._json(
                    401,
                    {
                        "type": "error",
                        "error": {"type": "authentication_error", "message": "no API key"},
                    },
                )
                return
            self._anthropic(body)
        elif path == "/api/chat":
            self._ollama(body)
        elif path in ("/v1/chat/completions", "/chat/completions"):
            if not headers.get("authorization", "").startswith("Bearer "):
                self._fault(Reply(fault=Fault(status=401, message="no API key")), "openai")
                return
            self._openai(body)
        else:
            self._json(404, {"error": f"no route {path}"})

    def _fault(self, reply: Reply, api: str) -> bool:
        f = reply.fault
        if f is None:
            return False
        if f.delay:
            time.sleep(f.delay)
        if f.status is None or f.in_stream:
            return False
        headers = {"retry-after": f"{f.retry_after:g}"} if f.retry_after is not None else {}
        if api == "anthropic":
            kind = {429: "rate_limit_error", 400: "invalid_request_error"}.get(
                f.status, "api_error"
            )
            self._json(
                f.status, {"type": "error", "error": {"type": kind, "message": f.message}}, headers
            )
        elif api == "openai":
            kind = {429: "rate_limit_exceeded", 400: "invalid_request_error"}.get(
                f.status, "server_error"
            )
            error = {"message": f.message, "type": kind, "param": None, "code": f.code or None}
            self._json(f.status, {"error": error}, headers)
        else:
            self._json(f.status, {"error": f.message}, headers)
        return True

    def _overflow(self, body: dict[str, Any], api: str) -> bool:
        """Refuse a prompt longer than the emulated context window, as the real API does."""
        limit = self.fake.context_chars
        if limit is None:
            return False
        size = len(json.dumps([body.get("system"), body.get("messages"), body.get("tools")]))
        if size <= limit:
            return False
        code = ""
        if api == "anthropic":
            msg = f"prompt is too long: {size // 4} tokens > {limit // 4} maximum"
        elif api == "openai":
            msg = (
                f"This model's maximum context length is {limit // 4} tokens. However, your "
                f"messages resulted in {size // 4} tokens. Please reduce the length of the messages."
            )
            code = "context_length_exceeded"
        else:
            msg = "the input length exceeds the context length"
        return self._fault(Reply(fault=Fault(status=400, message=msg, code=code)), api)

    def _refuse(self, api: str, problem: str | None) -> bool:
        """Answer 400 when the request is malformed, as the real API would."""
        if problem is None:
            return False
        return self._fault(Reply(fault=Fault(status=400, message=problem)), api)

    # -- Anthropic -----------------------------------------------------------------------------
    def _anthropic(self, body: dict[str, Any]) -> None:
        if self._refuse("anthropic", anthropic_problem(body)) or self._overflow(body, "anthropic"):
            return
        reply = self.fake.next_reply("anthropic", body)
        if self._fault(reply, "anthropic"):
            return
        model = body.get("model", "fake")
        tokens_in = len(json.dumps(body)) // 4
        content: list[dict[str, Any]] = []
        if reply.text:
            content.append({"type": "text", "text": reply.text})
        for call in reply.tool_calls:
            content.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_{secrets.token_hex(8)}",
                    "name": call["name"],
                    "input": call.get("input", {}),
                }
            )
        stop = "tool_use" if reply.tool_calls else "end_turn"
        tokens_out = max(1, len(json.dumps(content)) // 4)
        message = {
            "id": f"msg_{secrets.token_hex(8)}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out},
        }
        if not body.get("stream"):
            self._json(200, message)
            return
        self._anthropic_stream(reply, message)

    def _anthropic_stream(self, reply: Reply, message: dict[str, Any]) -> None:
        content, stop = message["content"], message["stop_reason"]
        tokens_in, tokens_out = message["usage"]["input_tokens"], message["usage"]["output_tokens"]
        self._start_stream("text/event-stream")

        def sse(event: str, data: dict[str, Any]) -> None:
            self._chunk(f"event: {event}\ndata: {json.dumps(data)}\n\n")

        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": tokens_in, "output_tokens": 1},
        }
        sse("message_start", {"type": "message_start", "message": start})
        for i, block in enumerate(content):
            if block["type"] == "text":
                sse(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
                for n, piece in enumerate(_pieces(block["text"], reply.chunk)):
                    if reply.fault and reply.fault.cut and n >= 1:
                        self._cut()
                        return
                    sse(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": i,
                            "delta": {"type": "text_delta", "text": piece},
                        },
                    )
                    if reply.delay_per_chunk:
                        time.sleep(reply.delay_per_chunk)
            else:
                sse(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {**block, "input": {}},
                    },
                )
                for piece in _pieces(json.dumps(block["input"]), 10):
                    sse(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": i,
                            "delta": {"type": "input_json_delta", "partial_json": piece},
                        },
                    )
            sse("content_block_stop", {"type": "content_block_stop", "index": i})
        if reply.fault and reply.fault.cut:
            self._cut()
            return
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": tokens_out},
            },
        )
        sse("message_stop", {"type": "message_stop"})
        self._end_stream()

    # -- OpenAI Chat Completions ---------------------------------------------------------------
    def _openai(self, body: dict[str, Any]) -> None:
        if self._refuse("openai", openai_problem(body)) or self._overflow(body, "openai"):
            return
        reply = self.fake.next_reply("openai", body)
        if self._fault(reply, "openai"):
            return
        calls = [
            {
                "id": c["id"] if "id" in c else f"call_{secrets.token_hex(8)}",
                "type": "function",
                "function": {
                    "name": c["name"],
                    "arguments": c.get("arguments", json.dumps(c.get("input", {}))),
                },
            }
            for c in reply.tool_calls
        ]
        usage = {"prompt_tokens": len(json.dumps(body)) // 4}
        usage["completion_tokens"] = max(1, (len(reply.text) + len(json.dumps(calls))) // 4)
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        head = {"id": f"chatcmpl-{secrets.token_hex(8)}", "created": int(time.time())}
        head["model"] = body["model"]
        finish = "tool_calls" if calls else "stop"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
            if calls:
                message["tool_calls"] = calls
            choice = {"index": 0, "message": message, "finish_reason": finish}
            self._json(
                200, {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
            )
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self._openai_stream(reply, head, calls, usage if include_usage else None)

    def _openai_stream(
        self,
        reply: Reply,
        head: dict[str, Any],
        calls: list[dict[str, Any]],
        usage: dict[str, int] | None,
    ) -> None:
        """`data:` chunks: text deltas, then each call's name and its arguments in fragments,
        the finish reason, usage in a last chunk with no choices if asked for, `[DONE]`."""
        self._start_stream("text/event-stream")

        def sse(delta: dict[str, Any], finish_reason: str | None = None) -> None:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            chunk = {**head, "object": "chat.completion.chunk", "choices": [choice]}
            self._chunk(f"data: {json.dumps(chunk)}\n\n")

        fault = reply.fault or Fault()
        sse({"role": "assistant", "content": ""})
        for n, piece in enumerate(_pieces(reply.text, reply.chunk)):
            if fault.cut and n >= 1:
                self._cut()
                return
            if fault.in_stream and n >= 1:
                error = {"message": fault.message, "type": "server_error", "code": fault.code}
                self._chunk(f"data: {json.dumps({'error': error})}\n\n")
                self._end_stream()
                return
            sse({"content": piece})
            if reply.delay_per_chunk:
                time.sleep(reply.delay_per_chunk)
        for i, call in enumerate(calls):
            fn = call["function"]
            index = reply.tool_calls[i].get("index", i)
            at = {} if index is None else {"index": index}
            sse({"tool_calls": [{**at, **call, "function": {"name": fn["name"], "arguments": ""}}]})
            for piece in _pieces(fn["arguments"], 10):
                sse({"tool_calls": [{**at, "function": {"arguments": piece}}]})
        if fault.cut:
            self._cut()
            return
        sse({}, "tool_calls" if calls else "stop")
        if usage is not None:
            chunk = {**head, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            self._chunk(f"data: {json.dumps(chunk)}\n\n")
        self._chunk("data: [DONE]\n\n")
        self._end_stream()

    # -- Ollama --------------------------------------------------------------------------------
    def _ollama(self, body: dict[str, Any]) -> None:
        if self._overflow(body, "ollama"):
            return
        reply = self.fake.next_reply("ollama", body)
        if self._fault(reply, "ollama"):
            return
        model = body.get("model", "fake")
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        calls = [
            {"function": {"name": c["name"], "arguments": c.get("input", {})}}
            for c in reply.tool_calls
        ]
        final = {
            "model": model,
            "created_at": now,
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": len(json.dumps(body)) // 4,
            "eval_count": max(1, len(reply.text) // 4),
        }
        if not body.get("stream", True):
            msg: dict[str, Any] = {"role": "assistant", "content": reply.text}
            if calls:
                msg["tool_calls"] = calls
            self._json(200, {**final, "message": msg})
            return
        self._start_stream("application/x-ndjson")
        for n, piece in enumerate(_pieces(reply.text, reply.chunk)):
            if reply.fault and reply.fault.cut and n >= 1:
                self._cut()
                return
            self._chunk(
                json.dumps(
                    {
                        "model": model,
                        "created_at": now,
                        "done": False,
                        "message": {"role": "assistant", "content": piece},
                    }
                )
                + "\n"
            )
            if reply.delay_per_chunk:
                time.sleep(reply.delay_per_chunk)
        if calls:
            self._chunk(
                json.dumps(
                    {
                        "model": model,
                        "created_at": now,
                        "done": False,
                        "message": {"role": "assistant", "content": "", "tool_calls": calls},
                    }
                )
                + "\n"
            )
        if reply.fault and reply.fault.cut:
            self._cut()
            return
        self._chunk(json.dumps({**final, "message": {"role": "assistant", "content": ""}}) + "\n")
        self._end_stream()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--script", help="JSON file: a list of replies")
    parser.add_argument("--echo", action="store_true", help="after the script, echo messages")
    args = parser.parse_args(argv)
    script = []
    if args.script:
        with open(args.script, encoding="utf-8") as fh:
            script = [Reply.from_dict(d) for d in json.load(fh)]
    server = FakeModelServer(script, responder=echo_responder if args.echo else None).start(
        args.port
    )
    print(server.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
