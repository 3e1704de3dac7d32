"""The aiohttp application: routes, the two event streams, and serving until stopped.

Handlers are thin: parse the request, call a page function or one library call in a thread,
answer. The event streams tail the runtime's files (status, run/stream/<agent>/*.jsonl, HEAD)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from anima import audit, mailbox, proposals, spool, stream
from anima.agent import Agent
from anima.channels import access
from anima.errors import AgentNotFound, AnimaError, BadProposal
from anima.home import Home
from anima.message import Message
from anima.web import pages, queries
from anima.web.html import Html
from anima.web.security import HEADERS, Guard, middleware

log = logging.getLogger(__name__)
T = TypeVar("T")

HOME = web.AppKey("home", Home)
STOP = web.AppKey("stop", asyncio.Event)
STATIC = {"style.css": "text/css", "app.js": "text/javascript", "icon.svg": "image/svg+xml"}
POLL_SECONDS = 0.1
OVERVIEW_SECONDS = 1.0
MAX_BODY = 256 * 1024


def _html(markup: Html, status: int = 200) -> web.Response:
    return web.Response(text=markup, status=status, content_type="text/html", charset="utf-8")


async def _in_thread(fn: Callable[..., Html], *args: Any) -> web.Response:
    return _html(await asyncio.to_thread(fn, *args))


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """An error a person caused is one escaped line on a page, never a traceback."""
    try:
        return await handler(request)
    except AgentNotFound as exc:
        return _html(pages.error_page(404, str(exc)), 404)
    except BadProposal as exc:  # not applied, not rejected: say why, and lead back to it
        m = request.match_info
        return _html(pages.proposal_error_page(m.get("name", ""), m.get("pid", ""), str(exc)), 409)
    except AnimaError as exc:
        return _html(pages.error_page(400, str(exc)), 400)


def _see(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location)


# -- pages ------------------------------------------------------------------------------------


async def overview(request: web.Request) -> web.Response:
    return await _in_thread(pages.overview, request.app[HOME])


async def agent_root(request: web.Request) -> web.Response:
    raise _see(f"/agents/{Agent.open(request.app[HOME], request.match_info['name']).name}/chat")


async def chat(request: web.Request) -> web.Response:
    c = request.query.get("c", "cli")
    return await _in_thread(
        pages.chat_page, request.app[HOME], request.match_info["name"], c, request["csrf"]
    )


async def chat_fragment(request: web.Request) -> web.Response:
    c = request.query.get("c", "cli")
    return await _in_thread(pages.chat_fragment, request.app[HOME], request.match_info["name"], c)


async def send(request: web.Request) -> web.Response:
    """Deliver the text as an inbox message, as the REPL does; the page then follows the reply."""
    home = request.app[HOME]
    agent = Agent.open(home, request.match_info["name"])
    form = await request.post()
    conversation = queries.check_conversation(str(form.get("c", "cli")))
    body = str(form.get("body", "")).strip()
    if not body:
        raise AnimaError("the message is empty")
    msg = Message.create(
        sender=agent.config.owner,
        to=agent.name,
        body=body,
        channel="cli",
        conversation=conversation,
    )
    await asyncio.to_thread(mailbox.deliver, agent.path, msg)
    raise _see(f"/agents/{agent.name}/chat?c={conversation}")


async def timeline(request: web.Request) -> web.Response:
    return await _in_thread(pages.timeline_page, request.app[HOME], dict(request.query))


async def agents_chart(request: web.Request) -> web.Response:
    return await _in_thread(pages.agents_chart_page, request.app[HOME], dict(request.query))


async def commit(request: web.Request) -> web.Response:
    m = request.match_info
    return await _in_thread(pages.commit_page, request.app[HOME], m["name"], m["sha"])


async def undo_confirm(request: web.Request) -> web.Response:
    m = request.match_info
    return await _in_thread(
        pages.undo_page, request.app[HOME], m["name"], m["sha"], request["csrf"]
    )


async def undo(request: web.Request) -> web.Response:
    m = request.match_info
    form = await request.post()
    if form.get("confirm") != "yes":
        raise AnimaError("undo needs confirmation")
    agent = Agent.open(request.app[HOME], m["name"])
    _, sha = await asyncio.to_thread(audit.undo, agent, queries.check_sha(m["sha"]))
    raise _see(f"/agents/{agent.name}/commit/{sha}")


async def stats(request: web.Request) -> web.Response:
    return await _in_thread(pages.stats_page, request.app[HOME], request.match_info["name"])


async def memory_view(request: web.Request) -> web.Response:
    return await _in_thread(
        pages.memory_page, request.app[HOME], request.match_info["name"], request.query.get("q", "")
    )


async def note(request: web.Request) -> web.Response:
    return await _in_thread(
        pages.note_page,
        request.app[HOME],
        request.match_info["name"],
        request.query.get("path", ""),
    )


async def approvals(request: web.Request) -> web.Response:
    return await _in_thread(pages.approvals_page, request.app[HOME], request["csrf"])


def _chosen(form: Mapping[str, Any], field: str, choices: dict[str, T]) -> T:
    """What the form's `field` picks among `choices`, or a clear error naming them."""
    picked = choices.get(str(form.get(field)))
    if picked is None:
        raise AnimaError(f"{field} must be {' or '.join(choices)}")
    return picked


async def pairing(request: web.Request) -> web.Response:
    form = await request.post()
    decide = _chosen(form, "decision", {"approve": access.approve, "deny": access.deny})
    await asyncio.to_thread(
        decide, request.app[HOME], str(form.get("channel", "")), str(form.get("code", ""))
    )
    raise _see("/approvals#pairing")


async def dead_letter(request: web.Request) -> web.Response:
    form = await request.post()
    act = _chosen(form, "action", {"retry": spool.retry, "drop": spool.drop})
    await asyncio.to_thread(
        act, request.app[HOME], str(form.get("channel", "")), str(form.get("id", ""))
    )
    raise _see("/approvals#dead")


async def proposals_list(request: web.Request) -> web.Response:
    return await _in_thread(
        pages.proposals_page, request.app[HOME], request.match_info["name"], request["csrf"]
    )


async def proposal(request: web.Request) -> web.Response:
    m = request.match_info
    return await _in_thread(
        pages.proposal_page, request.app[HOME], m["name"], m["pid"], request["csrf"]
    )


def web_user() -> str:
    """Who decided, as the proposal's record says: the user running `anima web`."""
    import getpass

    try:
        return f"{getpass.getuser()} (anima web)"
    except Exception:  # no user name in a container: still say where it came from
        return "anima web"


async def decide_proposal(request: web.Request) -> web.Response:
    """Approve (`force=yes` to apply one whose checks fail) or reject (`why`) a proposal."""
    m = request.match_info
    agent = Agent.open(request.app[HOME], m["name"])
    form = await request.post()
    decision = str(form.get("decision", ""))
    if decision == "approve":
        force = form.get("force") == "yes"
        await asyncio.to_thread(proposals.approve, agent, m["pid"], by=web_user(), force=force)
    elif decision == "reject":
        why = str(form.get("why", ""))
        await asyncio.to_thread(proposals.reject, agent, m["pid"], by=web_user(), why=why)
    else:
        raise AnimaError("decision must be approve or reject")
    back = "/approvals#proposals" if form.get("back") == "approvals" else ""
    raise _see(back or f"/agents/{agent.name}/proposals/{m['pid']}")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["file"]
    if name not in STATIC:  # a fixed list: no path from the request reaches the file system
        raise web.HTTPNotFound()
    text = resources.files("anima.web").joinpath("static", name).read_text(encoding="utf-8")
    return web.Response(text=text, content_type=STATIC[name], charset="utf-8")


async def favicon(request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently("/static/icon.svg")


# -- event streams ----------------------------------------------------------------------------


async def _open_events(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={**HEADERS, "Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    return response


async def _emit(response: web.StreamResponse, event: str, data: str) -> None:
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    await response.write(f"event: {event}\n{lines}\n".encode())


async def _until_stopped(request: web.Request, seconds: float) -> bool:
    """Sleep `seconds`; False once the server is stopping."""
    stop = request.app[STOP]
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return True
    return False


async def overview_events(request: web.Request) -> web.StreamResponse:
    """The overview's live part, re-sent whenever what it shows changed."""
    home = request.app[HOME]
    response = await _open_events(request)
    sent = ""
    try:
        while True:
            fragment = await asyncio.to_thread(pages.overview_fragment, home)
            if fragment != sent:
                await _emit(response, "overview", fragment)
                sent = fragment
            if not await _until_stopped(request, OVERVIEW_SECONDS):
                break
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response


def _stream_files(home: Home, name: str) -> dict[str, int]:
    folder = home.run_dir / "stream" / name
    try:
        with os.scandir(folder) as it:
            return {e.name: e.stat().st_size for e in it if e.name.endswith(".jsonl")}
    except FileNotFoundError:
        return {}


async def agent_events(request: web.Request) -> web.StreamResponse:
    """One agent's turns as they stream (`delta` events: {id, t, ...} from run/stream/), and a
    `refresh` when its HEAD moved or its inbox changed (the page reloads its chat)."""
    home = request.app[HOME]
    agent = Agent.open(home, request.match_info["name"])
    watched = {x for x in request.query.get("pending", "").split(",") if x}
    response = await _open_events(request)
    offsets = {
        f: (0 if f.removesuffix(".jsonl") in watched else size)
        for f, size in _stream_files(home, agent.name).items()
    }
    marker = request.query.get("marker", "")
    try:
        while True:
            for f in _stream_files(home, agent.name):
                events, offsets[f] = stream.read_events(
                    Path(home.run_dir / "stream" / agent.name / f), offsets.get(f, 0)
                )
                for ev in events:
                    await _emit(
                        response, "delta", json.dumps({"id": f.removesuffix(".jsonl"), **ev})
                    )
            now = await asyncio.to_thread(queries.marker, agent.path)
            if now != marker:
                await _emit(response, "refresh", now)
                marker = now
            if not await _until_stopped(request, POLL_SECONDS):
                break
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response


# -- the application --------------------------------------------------------------------------


def make_app(home: Home, guard: Guard) -> web.Application:
    app = web.Application(middlewares=[middleware(guard), errors], client_max_size=MAX_BODY)
    app[HOME] = home
    app[STOP] = asyncio.Event()

    async def stopping(app: web.Application) -> None:
        app[STOP].set()

    app.on_shutdown.append(stopping)
    app.add_routes(
        [
            web.get("/", overview),
            web.get("/events/overview", overview_events),
            web.get("/timeline", timeline),
            web.get("/charts", agents_chart),
            web.get("/approvals", approvals),
            web.post("/approvals/pairing", pairing),
            web.post("/approvals/dead-letter", dead_letter),
            web.get("/static/{file}", static),
            web.get("/favicon.ico", favicon),
            web.get("/agents/{name}", agent_root),
            web.get("/agents/{name}/chat", chat),
            web.get("/agents/{name}/chat/fragment", chat_fragment),
            web.get("/agents/{name}/events", agent_events),
            web.post("/agents/{name}/send", send),
            web.get("/agents/{name}/commit/{sha}", commit),
            web.get("/agents/{name}/undo/{sha}", undo_confirm),
            web.post("/agents/{name}/undo/{sha}", undo),
            web.get("/agents/{name}/stats", stats),
            web.get("/agents/{name}/memory", memory_view),
            web.get("/agents/{name}/memory/note", note),
            web.get("/agents/{name}/proposals", proposals_list),
            web.get("/agents/{name}/proposals/{pid}", proposal),
            web.post("/agents/{name}/proposals/{pid}", decide_proposal),
        ]
    )
    return app


async def serve(
    home: Home, guard: Guard, on_ready: Callable[[str], None], stop: asyncio.Event
) -> None:
    """Serve until `stop` is set; `on_ready(url)` once listening (the port is known then)."""
    app = make_app(home, guard)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, guard.bind, guard.port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    guard.port = sockets[0].getsockname()[1] if sockets else guard.port
    host = f"[{guard.bind}]" if ":" in guard.bind else guard.bind
    on_ready(f"http://{host}:{guard.port}/")
    try:
        await stop.wait()
    finally:
        app[STOP].set()
        await runner.cleanup()
