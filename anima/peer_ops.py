"""What a peer may ask of this home: the requests `anima serve-peer` answers on stdin/stdout
(SSH peers) and the webhook channel answers at POST /v1/peer (HTTP peers).

Each request is a JSON object `{"op", "from", ...}`; each answer `{"ok": true, ...}` or
`{"ok": false, "error", "permanent"}`. Whoever reaches this code is trusted as a peer: the SSH
key that may run `anima serve-peer`, or the holder of a peer's HMAC secret. Even so a request
is checked like any outside input: a message is parsed by the inbox's own parser, names are
checked, and nothing a peer sends can name a file outside the agent it addresses.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable
from typing import IO, Any

from anima import mailbox, stream
from anima.errors import AnimaError, BadMessage
from anima.home import Home
from anima.message import Message, parse, valid_id
from anima.peer import MAX_LINE, PEER_NAME, this_host

log = logging.getLogger(__name__)

Handler = Callable[[Home, str, dict[str, Any]], dict[str, Any]]
OPS: dict[str, Handler] = {}
OP_MODULES: tuple[str, ...] = ("anima.remotes",)
"""Modules that register ops of their own (with @peer_op), imported on the first request."""
MAX_WAIT = 25.0
"""The longest a `chat_events` request waits for something to happen."""


class Refused(AnimaError):
    """A request this home will never grant as asked (answered with permanent: true)."""


def peer_op(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        OPS[name] = fn
        return fn

    return register


def _ops() -> dict[str, Handler]:
    for module in OP_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            if exc.name != module:
                raise
    return OPS


def dispatch(home: Home, request: Any, *, peer: str | None = None) -> dict[str, Any]:
    """Answer one request. `peer` is who the transport authenticated (an HTTP peer's secret,
    `serve-peer --peer NAME`); without it the request's own `from` names the peer."""
    try:
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            raise Refused('a request is a JSON object with an "op" string')
        host = peer or request.get("from")
        if not isinstance(host, str) or not PEER_NAME.match(host):
            raise Refused('"from" must name the asking home (letters, digits, ".", "_", "-")')
        handler = _ops().get(request["op"])
        if handler is None:
            raise Refused(f"unknown op {request['op'][:40]!r}; this home knows {', '.join(sorted(OPS))}")
        return {"ok": True, **handler(home, host, request)}
    except Refused as exc:
        return {"ok": False, "error": str(exc), "permanent": True}
    except AnimaError as exc:
        return {"ok": False, "error": str(exc), "permanent": False}
    except Exception as exc:  # a bug must not end the session: say so, keep serving
        log.exception("peer request %.80r failed", request)
        return {"ok": False, "error": f"internal error: {type(exc).__name__}", "permanent": False}


def serve(home: Home, reader: IO[bytes], writer: IO[bytes], *, peer: str | None = None) -> None:
    """`anima serve-peer`: answer one request per line until end of input."""
    while True:
        line = reader.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE and not line.endswith(b"\n"):
            while (more := reader.readline(MAX_LINE)) and not more.endswith(b"\n"):
                pass  # skip the rest of an over-long line
            answer: dict[str, Any] = {"ok": False, "error": "request too long", "permanent": True}
        elif not line.strip():
            continue
        else:
            try:
                request = json.loads(line)
            except (ValueError, RecursionError):
                request = None
            if request is None:
                answer = {"ok": False, "error": "not a JSON request", "permanent": True}
            else:
                answer = dispatch(home, request, peer=peer)
            if isinstance(request, dict) and "rid" in request:
                answer["rid"] = request["rid"]  # the asker checks it: answers never shift
        writer.write(json.dumps(answer).encode() + b"\n")
        writer.flush()


def required(request: dict[str, Any], key: str) -> str:
    """A request's field that must be a non-empty string (Refused otherwise)."""
    value = request.get(key)
    if not isinstance(value, str) or not value:
        raise Refused(f'"{key}" must be a non-empty string')
    return value


def _agent(home: Home, name: str) -> str:
    """A local agent's name from a request (`gendry`, or `gendry@this-host`)."""
    name = name.partition("@")[0]
    if name not in home.agent_names():
        raise Refused(f"no agent {name[:64]!r} here")
    return name


@peer_op("hello")
def hello(home: Home, host: str, request: dict[str, Any]) -> dict[str, Any]:
    """Who this home is (a connection check)."""
    return {"host": this_host(home), "agents": len(home.agent_names())}


@peer_op("deliver")
def deliver(home: Home, host: str, request: dict[str, Any]) -> dict[str, Any]:
    """An agent message from an agent of `host`: into the addressed agent's inbox, exactly
    once (idempotent by id), marked `channel: agent`, `from: <agent>@<host>`, hops kept."""
    raw = required(request, "message").encode("utf-8", "surrogatepass")
    try:
        msg = parse(raw, fallback_id="missing-id", default_to="")
    except BadMessage as exc:
        raise Refused(f"not a message: {exc}") from None
    if msg.channel != "agent" or msg.kind != "message" or msg.id == "missing-id":
        raise Refused("only agent messages (channel: agent, with an id) travel between homes")
    sender = msg.sender.partition("@")[0]
    if not sender or not PEER_NAME.match(sender):
        raise Refused(f"from {msg.sender[:64]!r} is not an agent name")
    agent = _agent(home, msg.to)
    local = msg.with_(to=agent, sender=f"{sender}@{host}")
    delivered = mailbox.deliver(home.agents_dir / agent, local)
    return {"id": msg.id, "delivered": delivered is not None}


@peer_op("chat_send")
def chat_send(home: Home, host: str, request: dict[str, Any]) -> dict[str, Any]:
    """A line of `anima chat agent@here` typed on `host`: a cli message from you@host."""
    agent = _agent(home, required(request, "agent"))
    conversation = request.get("conversation") or "cli"
    if not isinstance(conversation, str) or not valid_id(conversation):
        raise Refused('"conversation" must be letters, digits, ".", "_" or "-"')
    msg = Message.create(
        sender=f"you@{host}",
        to=agent,
        body=required(request, "text"),
        channel="cli",
        conversation=conversation,
    )
    mailbox.deliver(home.agents_dir / agent, msg)
    return {"id": msg.id}


def _number(value: Any, limit: float, *, whole: bool = False) -> bool:
    """A JSON number from 0 to `limit` (a whole one with `whole`)."""
    kinds = (int,) if whole else (int, float)
    return isinstance(value, kinds) and not isinstance(value, bool) and 0 <= value <= limit


def _asked_by(home: Home, agent: str, msg_id: str, host: str) -> bool:
    """Is `msg_id` a message `host` sent `agent` (pending or handled)? A peer follows the
    replies to its own lines only, never the agent's other conversations."""
    agent_dir = home.agents_dir / agent
    for path in (agent_dir / "inbox" / f"{msg_id}.md", mailbox.archive_path(agent_dir, msg_id)):
        try:
            sender = mailbox.read_message(path, agent).sender
        except (AnimaError, OSError):
            continue
        return sender.endswith(f"@{host}")
    return False


@peer_op("chat_events")
def chat_events(home: Home, host: str, request: dict[str, Any]) -> dict[str, Any]:
    """The reply stream of a chat line: events after `offset`, waiting up to `wait` seconds
    for some; `done` with the reply (or error) once the turn ended."""
    agent = _agent(home, required(request, "agent"))
    msg_id = required(request, "id")
    if not valid_id(msg_id):
        raise Refused(f"not a message id: {msg_id[:64]!r}")
    offset, wait = request.get("offset", 0), request.get("wait", 0)
    if not _number(offset, 2**40, whole=True) or not _number(wait, 3600.0):
        raise Refused('"offset" must be a whole number and "wait" a number of seconds')
    if not _asked_by(home, agent, msg_id, host):
        raise Refused(f"no chat line {msg_id} from {host} to {agent}")
    deadline = time.monotonic() + min(max(0.0, float(wait)), MAX_WAIT)
    path = stream.stream_path(home, agent, msg_id)
    while True:
        events, offset = stream.read_events(path, offset)
        end = next((e for e in events if e.get("t") == "end"), None)
        reply = mailbox.reply_to(home.agents_dir / agent, agent, msg_id) if end or not events else None
        if end or reply is not None:
            body = reply.body if reply is not None else None
            error = end.get("error") if end else None
            return {"events": events, "offset": offset, "done": True, "reply": body, "error": error}
        if events or time.monotonic() >= deadline:
            return {"events": events, "offset": offset, "done": False}
        time.sleep(0.02)
