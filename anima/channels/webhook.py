"""Generic webhook adapter (aiohttp): other programs message an agent over HTTP.

    POST /v1/agents/{name}/messages   JSON {"text", "from"?, "conversation"?} or text/plain
                                      → 202 {"id", "status": "pending", "reply_url"}
    GET  /v1/messages/{id}            → 200 {"id", "status": "pending" | "answered", "replies"}

Every request is authenticated: `Authorization: Bearer <token>`, or an HMAC-SHA256 signature
(see `signature`) with a timestamp inside the replay window, each signature accepted once.
Replies are kept per request under spool/webhook/requests/YYYY-MM/<id>.json, readable only
while the request's agent is still served by this webhook, and, when `outgoing_url` is set,
POSTed there signed, retried with backoff and dead-lettered after `delivery.max_attempts`.
Slow, idle and surplus connections are cut off by `guard`; bad bodies are 400s, never 500s.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from anima.channels import base
from anima.channels.config import WebhookChannel
from anima.channels.guard import BACKLOG, ClientErrors, ConnectionGuard, quiet_fd_exhaustion
from anima.credentials import secret
from anima.errors import BadConfig
from anima.fsutil import write_atomic
from anima.home import Home
from anima.mailbox import month_of
from anima.message import Message, valid_id
from anima.peer import this_host
from anima.signing import SIG_HEADER as SIG_HEADER
from anima.signing import TS_HEADER as TS_HEADER
from anima.signing import raw as _raw
from anima.signing import signature as signature
from anima.spool import Progress, Spool, drain

log = logging.getLogger(__name__)

_SENDER = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
PEER_WORKERS = 4
"""Peer requests answered at once; more wait their turn (each is bounded: MAX_WAIT)."""
LINGER = 2.0
"""After an early answer (401, 404, 408), how long the rest of an unread body is drained, so
the client can read the answer before the connection closes (at most body_timeout)."""


class Auth:
    """Bearer token and/or HMAC signature check, with a replay cache for signatures that
    outlives a restart (kept in `seen_path` for as long as a signature could be replayed)."""

    def __init__(self, token: str | None, key: str | None, window: int, seen_path: Path):
        self.token = token
        self.key = key
        self.window = window
        self.seen_path = seen_path
        try:
            self.seen: dict[str, float] = json.loads(seen_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            self.seen = {}

    def check(self, method: str, path: str, headers: Any, body: bytes) -> str | None:
        """None when the request is authentic, else why not."""
        bearer = headers.get("Authorization", "")
        if self.token and bearer.startswith("Bearer "):
            if hmac.compare_digest(_raw(bearer[7:].strip()), self.token.encode()):
                return None
            return "bad bearer token"
        sig, ts = headers.get(SIG_HEADER, ""), headers.get(TS_HEADER, "")
        if not self.key or not sig:
            return "missing credentials (Authorization: Bearer, or a signature)"
        try:
            skew = abs(time.time() - int(ts))
        except ValueError:
            return f"missing or malformed {TS_HEADER}"
        if skew > self.window:
            return f"timestamp outside the {self.window}s window (replayed or clock skew)"
        if not hmac.compare_digest(_raw(sig), signature(self.key, ts, method, path, body).encode()):
            return "bad signature"
        now = time.time()
        self.seen = {s: t for s, t in self.seen.items() if t > now}
        if sig in self.seen:
            return "replayed request (this signature was already used)"
        self.seen[sig] = now + 2 * self.window
        write_atomic(self.seen_path, json.dumps(self.seen), durable=False)
        return None


class Requests:
    """What each webhook request became: pending, or answered with its replies."""

    def __init__(self, home: Home, channel: str = "webhook"):
        self.root = home.spool_dir / channel / "requests"

    def path(self, msg_id: str) -> Path:
        return self.root / month_of(msg_id) / f"{msg_id}.json"

    def get(self, msg_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(msg_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def put(self, record: dict[str, Any]) -> None:
        write_atomic(self.path(record["id"]), json.dumps(record, indent=1) + "\n")

    def add_reply(self, msg_id: str, reply: Message) -> bool:
        record = self.get(msg_id)
        if record is None:
            return False
        if all(r["id"] != reply.id for r in record["replies"]):
            record["replies"].append(
                {"id": reply.id, "from": reply.sender, "text": reply.body.strip("\n"), "created": reply.created}
            )
            record["status"] = "answered"
            self.put(record)
        return True


def _json_any(body: bytes) -> Any:
    """The JSON a body holds; ValueError (never RecursionError) says what is wrong."""
    try:
        return json.loads(body)
    except RecursionError as exc:
        raise ValueError("body is not valid JSON: nested too deeply") from exc
    except ValueError as exc:  # bad JSON, bad UTF-8, an integer too long to convert
        raise ValueError(f"body is not valid JSON: {exc}") from exc


def _json_object(body: bytes) -> dict[str, Any]:
    """The JSON object a body holds, with a "text" string; ValueError says what is wrong."""
    data = _json_any(body)
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise ValueError('JSON body must be an object with a "text" string')
    return data


def _string(data: dict[str, Any], key: str, default: str) -> str:
    """An optional string field: absent, null or "" is `default`; any other type is an error."""
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f'"{key}" must be a string')
    return value or default


def _parse_body(content_type: str, body: bytes) -> tuple[str, str, str]:
    """(text, sender, conversation) from a JSON or text body; ValueError says what is wrong."""
    if "json" in content_type:
        data = _json_object(body)
        text, sender, conv = data["text"], _string(data, "from", "client"), _string(data, "conversation", "")
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError("text body is not UTF-8") from exc
        sender, conv = "client", ""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # JSON can spell a lone surrogate ("\ud800")
        raise ValueError("text is not valid Unicode (a lone surrogate)") from exc
    if not text.strip():
        raise ValueError("text is empty")
    if not _SENDER.match(sender):
        raise ValueError('"from" must be 1-64 letters, digits, ".", "_", "@" or "-"')
    conversation = f"webhook-{conv or sender}"
    if not valid_id(conversation):
        raise ValueError('"conversation" must be letters, digits, ".", "_" or "-"')
    return text, sender, conversation


class WebhookAdapter:
    def __init__(self, home: Home, cfg: WebhookChannel):
        self.home = home
        self.cfg = cfg
        self.name = cfg.name
        self.peers = self._peer_auths()
        if not cfg.token_env and not cfg.secret_env and not self.peers:
            raise BadConfig(
                f"[channels.{self.name}] needs token_env or secret_env (or [peers.*] with "
                "secret_env): an unauthenticated webhook would let anyone who can reach it "
                "message your agents"
            )
        token = secret(home, cfg.token_env, "the webhook bearer token") if cfg.token_env else None
        key = secret(home, cfg.secret_env, "the webhook signing secret") if cfg.secret_env else None
        seen = home.run_dir / "channels" / f"{self.name}.seen.json"
        self.auth = Auth(token, key, cfg.replay_window, seen)
        out_env = cfg.outgoing_key_env
        self.out_key = secret(home, out_env, "the outgoing webhook secret") if out_env else None
        self.requests = Requests(home, self.name)
        self.spool = Spool(home, self.name)
        self.session: Any = None
        self.peer_pool = ThreadPoolExecutor(PEER_WORKERS, thread_name_prefix=f"{self.name}-peer")
        """Peer requests (a chat's long poll waits up to 25 s) run here, never in the pool
        the webhook's own message handling uses."""
        self.guard = ConnectionGuard(cfg.header_timeout, cfg.max_connections)

    def _peer_auths(self) -> dict[str, Auth]:
        """A signature check per peer with a shared secret: POST /v1/peer is answered for a
        request signed with one of them, as that peer."""
        auths = {}
        for name, peer in self.home.config().peers.items():
            if peer.secret_env:
                key = secret(self.home, peer.secret_env, f"the HMAC secret of peer {name}")
                seen = self.home.run_dir / "channels" / f"{self.name}.peer-{name}.seen.json"
                auths[name] = Auth(None, key, self.cfg.replay_window, seen)
        return auths

    def serves(self, agent: str) -> bool:
        """Whether `agent` may be addressed here now, by POST or by reading its replies."""
        return (not self.cfg.agents or agent in self.cfg.agents) and agent in self.home.agent_names()

    def app(self) -> Any:
        web = base.require("aiohttp.web", "webhook")
        app = web.Application(client_max_size=self.cfg.max_body, middlewares=[self.guard.middleware()])
        app.router.add_post("/v1/agents/{name}/messages", self.post_message)
        app.router.add_get("/v1/messages/{id}", self.get_message)
        app.router.add_get("/v1/health", self.health)
        app.router.add_post("/v1/peer", self.peer_request)
        return app

    async def _authentic(self, request: Any) -> bytes:
        from aiohttp import web

        body = await self._read_body(request)
        why = self.auth.check(request.method, request.path, request.headers, body)
        if why:
            log.warning("webhook: refused %s %s from %s: %s", request.method, request.path, request.remote, why)
            raise web.HTTPUnauthorized(text=json.dumps({"error": why}), content_type="application/json")
        return body

    async def _read_body(self, request: Any) -> bytes:
        """The whole body, bounded in size and time (413, 408)."""
        from aiohttp import web

        if request.content_length is not None and request.content_length > self.cfg.max_body:
            raise web.HTTPRequestEntityTooLarge(max_size=self.cfg.max_body, actual_size=request.content_length)
        try:
            async with asyncio.timeout(self.cfg.body_timeout):
                body = await request.read()  # raises 413 past client_max_size
        except TimeoutError:
            late = {"error": f"request body not received within {self.cfg.body_timeout:g}s"}
            raise web.HTTPRequestTimeout(
                text=json.dumps(late), content_type="application/json", headers={"Connection": "close"}
            ) from None
        return body

    async def peer_request(self, request: Any) -> Any:
        """A peer's request (anima.peer_ops), signed with that peer's secret."""
        from aiohttp import web

        from anima import peer_ops

        body = await self._read_body(request)
        peer = next(
            (
                name
                for name, auth in self.peers.items()
                if auth.check(request.method, request.path, request.headers, body) is None
            ),
            None,
        )
        if peer is None:
            log.warning("%s: refused a peer request from %s: no peer's signature", self.name, request.remote)
            return web.json_response({"ok": False, "error": "not signed by a known peer", "permanent": True}, status=401)
        try:
            data = _json_any(body)
        except ValueError as exc:
            return web.json_response({"ok": False, "error": str(exc), "permanent": True}, status=400)
        me = this_host(self.home)
        if isinstance(data, dict) and data.get("from") == me:
            # Signed with a secret this home shares with `peer`, yet from this home: one of
            # our own requests replayed back at us.
            return web.json_response({"ok": False, "error": "a request from this home itself", "permanent": True}, status=401)
        if isinstance(data, dict) and data.get("to") != me:  # signed for another home
            why = f"this home is {me!r}, not {str(data.get('to'))[:64]!r}: name the peer [peers.{me}]"
            return web.json_response({"ok": False, "error": why, "permanent": True}, status=401)
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(self.peer_pool, functools.partial(peer_ops.dispatch, self.home, data, peer=peer))
        return web.json_response(answer)

    async def health(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response({"ok": True})

    async def post_message(self, request: Any) -> Any:
        from aiohttp import web

        body = await self._authentic(request)
        name = request.match_info["name"]
        if not self.serves(name):
            return web.json_response({"error": f"no agent {name!r} on this webhook"}, status=404)
        try:
            text, sender, conversation = _parse_body(request.content_type, body)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        msg = Message.create(sender=f"{self.name}:{sender}", to=name, body=text, channel=self.name, conversation=conversation)
        self.requests.put({"id": msg.id, "agent": name, "status": "pending", "created": msg.created, "replies": []})
        await asyncio.to_thread(base.deliver, self.home, name, msg)
        return web.json_response(
            {"id": msg.id, "status": "pending", "reply_url": f"/v1/messages/{msg.id}"}, status=202
        )

    async def get_message(self, request: Any) -> Any:
        from aiohttp import web

        await self._authentic(request)
        msg_id = request.match_info["id"]
        record = self.requests.get(msg_id) if valid_id(msg_id) else None
        if record is None or not self.serves(record.get("agent", "")):
            return web.json_response({"error": f"no message {msg_id!r}"}, status=404)
        return web.json_response(record)

    async def send(self, msg: Message, progress: Progress) -> None:
        """A reply: make it retrievable, then POST it to the outgoing URL if one is set."""
        for target in base.reply_targets(msg):
            self.requests.add_reply(target, msg)
        if self.cfg.outgoing_url:
            await self._post_out(msg)

    async def _post_out(self, msg: Message) -> None:
        import aiohttp

        payload = json.dumps(
            {"id": msg.id, "agent": msg.sender, "to": msg.to, "in_reply_to": msg.in_reply_to,
             "answers": base.reply_targets(msg), "text": msg.body.strip("\n"), "created": msg.created}
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.out_key:
            ts = str(int(time.time()))
            path = urlsplit(self.cfg.outgoing_url).path or "/"
            headers |= {TS_HEADER: ts, SIG_HEADER: signature(self.out_key, ts, "POST", path, payload)}
        try:
            async with self.session.post(self.cfg.outgoing_url, data=payload, headers=headers) as resp:
                status = resp.status
                detail = (await resp.text())[:200]
        except (aiohttp.ClientError, OSError) as exc:
            raise base.TransientError(f"{type(exc).__name__}: {exc}") from exc
        if status == 429 or status >= 500:
            raise base.TransientError(f"outgoing webhook answered {status}: {detail}")
        if status >= 300:
            raise base.PermanentError(f"outgoing webhook answered {status}: {detail}")

    async def run(self, stop: asyncio.Event) -> None:
        import aiohttp
        from aiohttp import web

        runner = web.AppRunner(
            self.app(), access_log=None, keepalive_timeout=self.cfg.keepalive_timeout,
            lingering_time=min(LINGER, self.cfg.body_timeout),
            logger=ClientErrors(logging.getLogger("aiohttp.server")),
        )
        await runner.setup()
        assert runner.server is not None
        quiet_fd_exhaustion(asyncio.get_running_loop())
        listener = await asyncio.get_running_loop().create_server(
            self.guard.factory(runner.server), self.cfg.host, self.cfg.port, backlog=BACKLOG
        )
        log.info("webhook: listening on http://%s:%d", self.cfg.host, self.cfg.port)
        timeout = aiohttp.ClientTimeout(total=self.cfg.delivery.send_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as self.session:
            try:
                await base.supervise(stop, [drain(self.spool, self.send, self.cfg.delivery, stop)])
            finally:
                listener.close()
                await runner.cleanup()
                self.peer_pool.shutdown(wait=False, cancel_futures=True)
