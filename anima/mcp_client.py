"""Tools from Model Context Protocol servers: one live session per configured server (McpHub).

The hub is a ToolSource. It runs the `mcp` SDK's asyncio client on one background thread with its
own event loop; turns (sync, in worker threads) call into it and wait at most the server's
`timeout`. Sessions start on first use, are kept across turns, and are restarted (with backoff)
after they die or time out. A server that cannot start, dies or hangs costs the model a tool
error or the server's tools for one turn, never the turn. The SDK is imported only once an agent
actually has servers configured, so `anima tick` and `anima send` never pay for it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from anima.config import McpServer, load_agent_config
from anima.errors import AnimaError, BadConfig, ToolError
from anima.home import Home
from anima.tools.base import Tool, ToolContext, redact

if TYPE_CHECKING:
    from mcp import ClientSession
    from mcp.types import CallToolResult
    from mcp.types import Tool as RemoteTool

    from anima.agent import Agent
    from anima.doctor import Check

log = logging.getLogger(__name__)

T = TypeVar("T")

SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
"""What every provider accepts as a tool name (Anthropic's and OpenAI's rule)."""
MAX_TOOLS = 128
"""Tools offered per server; the rest of a longer list is left out."""
MAX_LISTED = 1000
"""Tools kept of a server's listing (all pages): each turn looks through them for the ones to
offer, so a listing of 100,000 cost every turn seconds and the hub its memory."""
MAX_DESCRIPTION_CHARS = 2000
MAX_SCHEMA_CHARS = 16000
"""A larger input schema is not cut (a cut schema is wrong) but the tool is left out."""
MAX_PAGES = 20
"""tools/list pages read per listing, so a paginator that never ends cannot hang a start."""
BACKOFF = 1.0
MAX_BACKOFF = 60.0
LOG_MAX_BYTES = 1024 * 1024
"""A server's stderr log is rotated to NAME.log.1 past this size when the server starts."""
START_TIMEOUT = 30.0
"""Seconds a server may take to start and list its tools (programs fetched by npx or uvx can
take that long). A turn waits for a start only up to the server's `timeout`; meanwhile the
start goes on, and the server's tools join the next turn."""
GRACE = 5.0
"""Extra seconds the turn's thread waits beyond a server's timeout before giving up on the
hub's event loop itself."""
CANCEL_POLL = 0.1
"""How often a waiting turn looks at its cancel event (the runtime shutting down)."""


class ServerDown(AnimaError):
    """A server could not be started or reached; its tools are unavailable for now."""


def check_server(name: str, server: McpServer, where: str) -> None:
    """Refuse a `[mcp.NAME]` table that cannot work, with what to change."""
    table = f"{where} [mcp.{name}]"
    if not SERVER_NAME.match(name):
        raise BadConfig(f"{table}: a server name is 1-32 letters, digits, '_' or '-'")
    if bool(server.command) == bool(server.url):
        raise BadConfig(
            f"{table}: give either command (a program speaking MCP on stdio) or url (a "
            "streamable HTTP endpoint), " + ("not both" if server.command else "not neither")
        )
    if server.url and not re.match(r"^https?://", server.url):
        raise BadConfig(f"{table}: url must start with http:// or https://, not {server.url!r}")
    if server.timeout <= 0:
        raise BadConfig(f"{table}: timeout must be more than 0 seconds, not {server.timeout}")
    if server.url and (server.args or server.env or server.pass_env):
        raise BadConfig(f"{table}: args, env and pass_env are for command servers, not url ones")
    if server.command and server.headers_env:
        raise BadConfig(f"{table}: headers_env is for url servers, not command ones")


def effective_servers(home: Home, agent_config_mcp: dict[str, McpServer]) -> dict[str, McpServer]:
    """The servers an agent uses: anima.toml's, replaced name by name by its agent.toml's,
    without the disabled ones. Raises BadConfig for a table that cannot work."""
    merged: dict[str, tuple[McpServer, str]] = {
        n: (s, str(home.config_path)) for n, s in home.config().mcp.items()
    }
    merged.update({n: (s, "agent.toml") for n, s in agent_config_mcp.items()})
    out = {}
    for name, (server, where) in sorted(merged.items()):
        if server.enabled:
            check_server(name, server, where)
            out[name] = server
    return out


def tool_name(server: str, remote: str) -> str:
    """`SERVER__tool`, made safe for every provider: other characters become '_', and a name too
    long is cut and given a short hash of the original so two long names stay apart."""
    safe = f"{server}__{re.sub(r'[^A-Za-z0-9_-]', '_', remote)}"
    if len(safe) > 64:
        digest = hashlib.sha256(remote.encode()).hexdigest()[:8]
        safe = f"{safe[:55]}_{digest}"
    return safe


def render_result(result: CallToolResult) -> str:
    """A call's content as the tool result text: text as is, anything else as one line."""
    parts: list[str] = []
    for block in result.content:
        kind = getattr(block, "type", "?")
        if kind == "text":
            parts.append(block.text)  # type: ignore[union-attr]
        elif kind in ("image", "audio"):
            size = len(block.data) * 3 // 4  # type: ignore[union-attr]
            parts.append(f"[{kind}: {block.mime_type}, {size} bytes, not shown]")  # type: ignore[union-attr]
        elif kind == "resource_link":
            parts.append(f"[resource link: {block.uri} ({block.name})]")  # type: ignore[union-attr]
        elif kind == "resource":
            res = block.resource  # type: ignore[union-attr]
            text = getattr(res, "text", None)
            parts.append(text if text is not None else f"[resource: {res.uri}, binary, not shown]")
        else:
            parts.append(f"[{kind} content, not shown]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts) or "(no content)"


@dataclass(frozen=True)
class McpTool(Tool):
    """A server's tool. Its schema is full JSON Schema, not the built-ins' flat kind: only the
    shape (a JSON object) is checked here and the server validates the rest."""

    def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        if not isinstance(args, dict):
            raise ToolError("arguments must be a JSON object")
        return str(self.fn(args, ctx.cancel if ctx is not None else None))


@dataclass(frozen=True)
class ServerStatus:
    name: str
    transport: str
    """stdio or http."""
    target: str
    """The command line or the url (never a secret: those stay in the environment)."""
    state: str
    """idle (not started yet, or stopped), starting, running, or failed (see `error`)."""
    error: str = ""
    tools: list[str] = field(default_factory=list)
    """The names the model sees (after `allow`)."""
    agents: list[str] = field(default_factory=list)
    """Agents whose turns get this server's tools."""
    log: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _StderrLog:
    """A stdio server's stderr, through a pipe into run/mcp/NAME.log (rotated once past its cap
    when the server starts) with the secret values it was given redacted: servers log their
    arguments and settings, and the log must not keep what the environment held."""

    def __init__(self, path: Path, secrets: dict[str, str]):
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size > LOG_MAX_BYTES:
                path.replace(path.with_suffix(".log.1"))
        self.secrets = secrets
        self._out = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        read, write = os.pipe()
        os.set_blocking(read, False)
        self._read = read
        self.writer: TextIO = os.fdopen(write, "w")
        """The pipe's write end, for the child; ours is closed once it has been spawned."""
        self._pending = b""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(read, self._drain)

    def spawned(self) -> None:
        self.writer.close()  # the child holds its own copy: EOF comes when it exits

    def _drain(self) -> None:
        try:
            data = os.read(self._read, 65536)
        except BlockingIOError:
            return
        if not data:  # EOF: the server (and whatever it started) is gone
            self._loop.remove_reader(self._read)
        self._pending += data
        self._write(final=not data or len(self._pending) > 65536)

    def _write(self, final: bool) -> None:
        """Write the complete lines (all of it when `final`), redacted."""
        lines = self._pending.split(b"\n")
        self._pending = b"" if final else lines.pop()
        if final and not lines[-1]:
            lines.pop()
        for line in lines:
            self._out.write(redact(line.decode("utf-8", errors="replace"), self.secrets) + "\n")
        self._out.flush()

    async def close(self) -> None:
        self._loop.remove_reader(self._read)
        with contextlib.suppress(OSError):  # BlockingIOError: nothing more is written now
            while data := os.read(self._read, 65536):
                self._pending += data
        self._write(final=True)
        self.writer.close()
        os.close(self._read)
        self._out.close()


def _describe(exc: BaseException) -> str:
    """One line for a failure, from the innermost cause (task groups wrap what really failed)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, AnimaError):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {exc.filename or exc}"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


def _redactable(values: dict[str, str]) -> dict[str, str]:
    """The values worth redacting: short ones would garble ordinary text (credentials' rule)."""
    from anima.credentials import MIN_SECRET_CHARS

    return {k: v for k, v in values.items() if len(v.strip()) >= MIN_SECRET_CHARS}


def _key(owner: str, name: str, server: McpServer) -> str:
    return f"{owner}/{name} " + json.dumps(dataclasses.asdict(server), sort_keys=True)


def _owned(
    home: Home, agent: str, tables: dict[str, McpServer]
) -> list[tuple[str, str, McpServer]]:
    """(owner, name, table) of each server `agent` uses: owner "" for an anima.toml table (one
    session for every agent), the agent for its own agent.toml table (a session of its own, so
    a server's state is never shared with another agent by accident)."""
    return [
        (agent if name in tables else "", name, server)
        for name, server in effective_servers(home, tables).items()
    ]


@dataclass(eq=False)
class _Run:
    """One start of a server: from spawning (or connecting) to its end."""

    ready: asyncio.Future[None]
    stop: asyncio.Event
    session: ClientSession | None = None
    failed: bool = False
    task: asyncio.Task[None] | None = None


class _Session:
    """One server's connection, restarted as needed. Lives on the hub's event loop: every
    method but `status` runs there, so no lock guards its state."""

    def __init__(self, home: Home, owner: str, name: str, config: McpServer, start_timeout: float):
        self.home, self.owner, self.name, self.config = home, owner, name, config
        self.start_timeout = start_timeout
        self.closed = False
        self.state = "idle"
        self.error = ""
        self.remote_tools: list[RemoteTool] | None = None
        self.stale = False
        self.failures = 0
        self.retry_at = 0.0
        self.secrets: dict[str, str] = {}
        self.current: _Run | None = None
        self.runs: set[_Run] = set()
        """Every run not yet ended, stopping ones included, so `stop` can wait for them all."""
        self._logged = ""

    @property
    def transport(self) -> str:
        return "stdio" if self.config.command else "http"

    @property
    def target(self) -> str:
        return " ".join([self.config.command, *self.config.args]) or self.config.url

    @property
    def log_path(self) -> Path:
        return (
            self.home.run_dir
            / "mcp"
            / (f"{self.owner}.{self.name}.log" if self.owner else f"{self.name}.log")
        )

    async def connected(self, deadline: float) -> tuple[ClientSession, _Run]:
        """The live session, started now if need be; ServerDown if it is not up by `deadline`
        (a start still under way goes on, for later turns)."""
        loop = asyncio.get_running_loop()
        run = self.current
        if self.closed:
            raise ServerDown(
                f"MCP server {self.name} was stopped (its table changed, or Anima is stopping)"
            )
        if run is None:
            wait = self.retry_at - time.monotonic()
            if wait > 0:
                raise ServerDown(
                    f"MCP server {self.name} is unavailable ({self.error}); next try in {wait:.0f}s"
                )
            run = self._start()
        if not run.ready.done():
            try:
                await asyncio.wait_for(asyncio.shield(run.ready), deadline - loop.time())
            except TimeoutError:
                raise ServerDown(f"MCP server {self.name} is still starting") from None
        run.ready.result()  # raises ServerDown if the start failed
        assert run.session is not None
        return run.session, run

    def _start(self) -> _Run:
        run = self.current = _Run(asyncio.get_running_loop().create_future(), asyncio.Event())
        self.runs.add(run)
        run.task = asyncio.get_running_loop().create_task(self._run(run))
        return run

    def _restart(self) -> None:
        """Start again in the background after a running server died or hung, so the next turn
        finds it warm."""
        if self.current is None and not self.closed:
            self._start()

    async def _run(self, run: _Run) -> None:
        """Own the transport and session from start to stop (anyio needs them entered and left
        in one task); end when stopped or when the server goes away."""
        import anyio
        from mcp import ClientSession

        self.state, self.error = "starting", ""
        gone = asyncio.Event()
        why = ""
        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await self._open(stack)
                # Relay the server's messages, so that its end (a process exiting) is seen at
                # once rather than by the next call.
                relay_in, relay_out = anyio.create_memory_object_stream[Any](0)
                tg = await stack.enter_async_context(anyio.create_task_group())
                stack.callback(tg.cancel_scope.cancel)
                tg.start_soon(self._relay, read, relay_in, gone)
                session = await stack.enter_async_context(
                    ClientSession(relay_out, write, message_handler=partial(self._notice, gone))
                )
                with anyio.fail_after(self.start_timeout):
                    await session.initialize()
                    self.remote_tools = await self._list(session)
                run.session, self.stale = session, False
                if not run.failed:
                    self.state = "running"
                run.ready.set_result(None)
                log.info("MCP server %s started (%d tools)", self.name, len(self.remote_tools))
                waits = [asyncio.ensure_future(e.wait()) for e in (run.stop, gone)]
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
                if not run.stop.is_set():
                    why = "the server closed its connection (it exited?)"
        except asyncio.CancelledError:  # the hub closing: not a failure of the server
            why = ""
            raise
        except Exception as exc:
            late = "timed out" if _is_timeout(exc) else _describe(exc)
            if _is_timeout(exc) and not run.ready.done():
                late = f"did not answer within {self.start_timeout:g}s"
            why = why or (late if run.ready.done() else f"could not start: {late}")
        finally:
            run.session = None
            if why:
                self._failed(run, why)
            elif self.current is run:
                self.current, self.state = None, "idle"
            if not run.ready.done():
                said = self.error or "stopped"
                run.ready.set_exception(ServerDown(f"MCP server {self.name}: {said}"))
                run.ready.exception()  # retrieved: its waiter may have given up already
            self.runs.discard(run)

    async def _open(self, stack: contextlib.AsyncExitStack) -> tuple[Any, Any]:
        """Enter the transport; secrets are read from the environment here, at each start."""
        from anima.credentials import secret

        cfg, where = self.config, f"[mcp.{self.name}]"
        if cfg.command:
            from mcp import StdioServerParameters, stdio_client

            passed = {v: secret(self.home, v, f"{where} pass_env") for v in cfg.pass_env}
            self.secrets = _redactable(passed)
            env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
            params = StdioServerParameters(
                command=cfg.command, args=cfg.args, env={**env, **cfg.env, **passed}
            )
            sdk_log = logging.getLogger("mcp.client.stdio")
            if _STRAY_LINES not in sdk_log.filters:
                sdk_log.addFilter(_STRAY_LINES)
            stderr = _StderrLog(self.log_path, self.secrets)
            stack.push_async_callback(stderr.close)
            streams = await stack.enter_async_context(stdio_client(params, errlog=stderr.writer))
            stderr.spawned()
            return streams
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        headers = {
            h: secret(self.home, v, f"{where} headers_env") for h, v in cfg.headers_env.items()
        }
        self.secrets = _redactable({cfg.headers_env[h]: v for h, v in headers.items()})
        timeout = httpx2.Timeout(cfg.timeout, read=max(cfg.timeout, 300))
        client = await stack.enter_async_context(
            httpx2.AsyncClient(headers=headers, timeout=timeout)
        )
        return await stack.enter_async_context(streamable_http_client(cfg.url, http_client=client))

    @staticmethod
    async def _relay(source: Any, sink: Any, gone: asyncio.Event) -> None:
        try:
            async with sink:
                async for item in source:
                    await sink.send(item)
        finally:
            gone.set()

    async def _notice(self, gone: asyncio.Event, message: Any) -> None:
        """Server notifications: a changed tool list is read again before the next turn; an HTTP
        transport failure (the server gone) ends the session."""
        if isinstance(message, Exception):
            log.debug("MCP server %s: transport error: %s", self.name, _describe(message))
            if not self.config.command:  # on stdio it is a stray line; the end of stdout is seen
                gone.set()
        elif getattr(message, "method", "") == "notifications/tools/list_changed":
            self.stale = True

    async def _list(self, session: ClientSession) -> list[RemoteTool]:
        from mcp.types import PaginatedRequestParams

        tools: list[RemoteTool] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            params = PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await session.list_tools(params=params)
            tools += page.tools[: MAX_LISTED - len(tools)]
            cursor = page.next_cursor
            if not cursor or len(tools) >= MAX_LISTED:
                break
        return tools

    async def tools(self, deadline: float) -> list[RemoteTool]:
        session, run = await self.connected(deadline)
        if self.stale or self.remote_tools is None:
            self.stale = False
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                self.remote_tools = await asyncio.wait_for(self._list(session), remaining)
            except Exception as exc:
                self._failed(run, f"listing its tools failed: {_describe(exc)}")
                raise ServerDown(f"MCP server {self.name}: {self.error}") from None
        return self.remote_tools

    async def call(self, remote: str, args: dict[str, Any]) -> CallToolResult:
        from mcp import MCPError
        from mcp.types import CONNECTION_CLOSED, REQUEST_TIMEOUT

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout  # one budget: a restart under way, the call
        session, run = await self.connected(deadline)
        try:
            left = max(deadline - loop.time(), 0.01)
            result = await session.call_tool(remote, args, read_timeout_seconds=left)
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                # A hung call may have wedged the server: the next use starts a fresh one.
                self._failed(run, f"a call to {remote} took longer than {self.config.timeout:g}s")
                raise ToolError(
                    f"MCP server {self.name} did not answer {remote} within "
                    f"{self.config.timeout:g}s (timeout); it is restarted for the next call"
                ) from None
            if exc.code == CONNECTION_CLOSED:
                self._failed(run, "the server closed its connection (it exited?)")
                raise ToolError(
                    f"MCP server {self.name} went away during {remote} (it exited or closed "
                    "the connection); it is restarted for the next call"
                ) from None
            raise ToolError(f"MCP server {self.name}: {remote} failed: {exc.message}") from None
        self.failures = 0
        return result

    def _failed(self, run: _Run, why: str) -> None:
        """Record a run's failure once and stop it. A server that worked is retried at once the
        first time; one that cannot start backs off (1s, 2s, 4s ... up to MAX_BACKOFF)."""
        if run.failed:
            return
        run.failed = True
        run.stop.set()
        started = run.ready.done() and run.ready.exception() is None
        self.failures += 1
        if started and self.failures == 1:
            delay = 0.0
        else:
            delay = min(BACKOFF * 2 ** (self.failures - (2 if started else 1)), MAX_BACKOFF)
        self.retry_at = time.monotonic() + delay
        if self.current is run:
            self.current = None
            self.state, self.error = "failed", why
            if started:
                asyncio.get_running_loop().call_later(delay, self._restart)
        if why != self._logged:
            self._logged = why
            where = f" (its stderr: {self.log_path})" if self.config.command else ""
            log.warning("MCP server %s: %s%s", self.name, why, where)

    async def stop(self) -> None:
        """Stop every run of this server and wait for them to end (each ends within seconds:
        the SDK closes stdin, then terminates, then kills)."""
        self.closed = True
        self.current = None
        runs = list(self.runs)
        for run in runs:
            run.stop.set()
            if not run.ready.done() and run.task is not None:
                run.task.cancel()  # a hung start: the SDK still stops its process, shielded
        tasks = [r.task for r in runs if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=10)

    def status(self, exposed: list[str], agents: list[str]) -> ServerStatus:
        return ServerStatus(
            self.name,
            self.transport,
            self.target,
            self.state,
            self.error if self.state == "failed" else "",
            exposed,
            agents,
            str(self.log_path) if self.config.command else "",
        )


def _is_timeout(exc: BaseException) -> bool:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return isinstance(exc, TimeoutError)


class _StrayLines(logging.Filter):
    """The SDK logs every line a stdio server writes to stdout that is not JSON-RPC as an error
    with a traceback: a server printing its debug output to stdout would fill the log (and the
    journal) at its own pace. Such a line is skipped (`_notice`); its log record is one line at
    DEBUG, without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Failed to parse JSONRPC message"):
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_STRAY_LINES = _StrayLines()


def _holds_secret(text: str, secrets: dict[str, str]) -> bool:
    return redact(text, secrets) != text


def _unclashed(tools: list[Tool]) -> list[Tool]:
    """`tools` without the names two servers share: server `a`'s tool `b__c` and server
    `a__b`'s tool `c` are both `a__b__c`, and whichever came first would take the other's calls
    (and arguments). Neither is offered."""
    seen: dict[str, int] = {}
    for t in tools:
        seen[t.name] = seen.get(t.name, 0) + 1
    for name in sorted(n for n, k in seen.items() if k > 1):
        log.warning("MCP: two servers offer a tool named %s; neither is offered", name)
    return [t for t in tools if seen[t.name] == 1]


class McpHub:
    """The MCP servers of a home's agents, as one ToolSource. Thread-safe: turns of different
    agents may ask for tools and call them at once. Call `close()` when done (the runtime on
    shutdown, `anima run --once` and `anima mcp list` at their end)."""

    name = "mcp"

    def __init__(self, home: Home, *, start_timeout: float = START_TIMEOUT):
        self.home = home
        self.start_timeout = start_timeout
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sessions: dict[str, _Session] = {}
        self._closed = False

    # -- the ToolSource side -------------------------------------------------------------------

    def tools(self, agent: Agent) -> list[Tool]:
        """The agent's servers' tools, listed (and the servers started) concurrently, each within
        its own timeout. A server that cannot start is left out for this turn."""
        owned = _owned(self.home, agent.name, agent.config.mcp)
        if not owned:
            return []
        sessions = [self._session(*o) for o in owned]
        wait = max(s.config.timeout for s in sessions) + GRACE
        listed = self._submit(self._list_all(sessions), wait)
        out: list[Tool] = []
        for session, remote in zip(sessions, listed, strict=True):
            out += self._offer(session, remote or [])
        return _unclashed(out)

    def _call(
        self,
        session: _Session,
        remote: str,
        args: dict[str, Any],
        cancel: threading.Event | None = None,
    ) -> str:
        """Call one tool; any failure is a ToolError for the model. `cancel` (the runtime shutting
        down) stops the wait at once."""
        name, timeout = session.name, session.config.timeout
        try:
            result = self._submit(session.call(remote, args), timeout + GRACE, cancel)
        except (ServerDown, ToolError) as exc:  # the server's words may hold what it was given
            raise ToolError(redact(str(exc), session.secrets)) from None
        except TimeoutError:
            raise ToolError(f"MCP server {name} did not answer within {timeout:g}s") from None
        except concurrent.futures.CancelledError:
            raise ToolError(f"the call to {name} was stopped: Anima is shutting down") from None
        text = redact(render_result(result), session.secrets)
        if result.is_error:
            raise ToolError(text)
        return text

    # -- status ----------------------------------------------------------------------------------

    def status(self, names: Iterable[str] = (), *, connect: bool = False) -> list[ServerStatus]:
        """Every configured server (global and per agent), or only `names`: its state and tools.
        With `connect`, servers not running yet are started and listed first (each within its
        timeout), as `anima mcp list` and `anima doctor` do without a runtime."""
        wanted = set(names)
        users, problems = self._configured()
        rows: list[ServerStatus] = [
            p for p in problems if not wanted or p.name in wanted or p.name.startswith("agent ")
        ]
        picked = [u for u in users.values() if not wanted or u[1] in wanted]
        sessions = [self._session(owner, name, server) for owner, name, server, _ in picked]
        listed: list[list[RemoteTool] | None] = [s.remote_tools for s in sessions]
        if connect and sessions:
            wait = max(s.config.timeout for s in sessions) + GRACE
            listed = self._submit(self._list_all(sessions), wait)
        for session, (*_, agents), remote in zip(sessions, picked, listed, strict=True):
            exposed = [t.name for t in self._offer(session, remote or [])]
            rows.append(session.status(exposed, agents))
        return rows

    def _configured(
        self,
    ) -> tuple[dict[str, tuple[str, str, McpServer, list[str]]], list[ServerStatus]]:
        """(owner, name, table, agents using it) by session key; bad configs as failed rows."""
        users: dict[str, tuple[str, str, McpServer, list[str]]] = {}
        problems: list[ServerStatus] = []
        try:
            self.home.config()
        except BadConfig as exc:
            return {}, [ServerStatus("(anima.toml)", "-", "", "failed", str(exc))]
        for agent in self.home.agent_names():
            try:
                cfg = load_agent_config(self.home.agent_dir(agent) / "agent.toml")
                owned = _owned(self.home, agent, cfg.mcp)
            except BadConfig as exc:
                problems.append(ServerStatus(f"agent {agent}", "-", "", "failed", str(exc)))
                continue
            for owner, name, server in owned:
                users.setdefault(_key(owner, name, server), (owner, name, server, []))[3].append(
                    agent
                )
        try:
            for name, server in effective_servers(self.home, {}).items():
                users.setdefault(_key("", name, server), ("", name, server, []))
        except BadConfig as exc:
            problems.append(ServerStatus("(anima.toml)", "-", "", "failed", str(exc)))
        return dict(sorted(users.items())), problems

    # -- plumbing ----------------------------------------------------------------------------------

    def _session(self, owner: str, name: str, server: McpServer) -> _Session:
        key = _key(owner, name, server)
        edited = False
        with self._lock:
            found = self._sessions.get(key)
            if found is None:
                found = _Session(self.home, owner, name, server, self.start_timeout)
                self._sessions[key] = found
                edited = any(
                    (s.owner, s.name) == (owner, name) and k != key
                    for k, s in self._sessions.items()
                )
        if edited:
            self._retire_unused()
        return found

    def _retire_unused(self) -> None:
        """Stop the sessions whose table no agent uses any more: a person edited it, and the
        old server must not run on beside the new one until the runtime stops."""
        users, _ = self._configured()
        with self._lock:
            unused = [self._sessions.pop(k) for k in list(self._sessions) if k not in users]
            loop = self._loop
        for session in unused:
            log.info("MCP server %s: its table changed; the old session is stopped", session.name)
            if loop is not None:
                asyncio.run_coroutine_threadsafe(session.stop(), loop)

    def _offer(self, session: _Session, remote: list[RemoteTool]) -> list[Tool]:
        """The model's view of a server's tools: allowed, safely named, bounded."""
        cfg = session.config
        out: dict[str, Tool] = {}
        for rt in remote[:MAX_LISTED]:
            if len(out) >= MAX_TOOLS:
                log.debug("MCP server %s offers more than %d tools", session.name, MAX_TOOLS)
                break
            if cfg.allow and rt.name not in cfg.allow:
                continue
            exposed = tool_name(session.name, rt.name)
            schema = rt.input_schema
            why = ""
            if not TOOL_NAME.match(exposed):
                why = f"no safe name can be made of it ({exposed!r})"
            elif exposed in out:
                why = f"its name clashes with another tool's as {exposed}"
            elif not isinstance(schema, dict) or schema.get("type") != "object":
                why = "its input schema is not an object schema"
            elif len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
                why = f"its input schema is larger than {MAX_SCHEMA_CHARS} characters"
            elif _holds_secret(exposed + json.dumps(schema), session.secrets):
                # a name or schema is not redacted (that would break it), yet both reach the
                # model, and a name called reaches history and the commit
                why = "its name or schema holds a value the server was handed"
            if why:
                shown = redact(repr(rt.name), session.secrets)
                log.debug("MCP server %s: tool %s left out: %s", session.name, shown, why)
                continue
            description = (rt.description or rt.title or rt.name)[:MAX_DESCRIPTION_CHARS]
            description = redact(description, session.secrets)  # it goes to the model as is
            fn: Callable[[dict[str, Any], threading.Event | None], str] = partial(
                self._call, session, rt.name
            )
            out[exposed] = McpTool(exposed, description, schema, fn)
        return list(out.values())

    async def _list_all(self, sessions: list[_Session]) -> list[list[RemoteTool] | None]:
        async def one(s: _Session) -> list[RemoteTool] | None:
            deadline = asyncio.get_running_loop().time() + s.config.timeout
            try:
                return await s.tools(deadline)
            except ServerDown:
                return None  # logged once when it failed; the server's tools sit this turn out
            except Exception:  # a bug must not cost the other servers their tools
                log.exception("MCP server %s: listing its tools failed", s.name)
                return None

        return list(await asyncio.gather(*(one(s) for s in sessions)))

    def _submit(
        self, coro: Coroutine[Any, Any, T], timeout: float, cancel: threading.Event | None = None
    ) -> T:
        """Run `coro` on the hub's loop and wait for it: TimeoutError past `timeout`,
        CancelledError once `cancel` is set (the coroutine is cancelled either way)."""
        loop = self._ensure_loop()
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            step = left if cancel is None else min(left, CANCEL_POLL)
            with contextlib.suppress(concurrent.futures.TimeoutError):
                return future.result(max(step, 0))
            if cancel is not None and cancel.is_set():
                future.cancel()
                raise concurrent.futures.CancelledError
            if time.monotonic() >= deadline:
                future.cancel()
                raise TimeoutError

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise ServerDown("the MCP hub is closed (the runtime is shutting down)")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="anima-mcp", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def close(self) -> None:
        """Stop every server and the hub's thread. Idempotent; the hub refuses work after."""
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
            sessions = list(self._sessions.values())
        if loop is None or thread is None:
            return

        async def stop_all() -> None:
            await asyncio.gather(*(s.stop() for s in sessions))

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop_all(), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        if not thread.is_alive():
            loop.close()

    def __enter__(self) -> McpHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def survey(home: Home, names: Iterable[str] = ()) -> list[ServerStatus]:
    """Start every configured server (or `names`), list its tools and stop it again, for a
    person asking (`anima mcp list`, `anima doctor`). Failures are in the rows, so they are not
    logged as well."""
    quiet = [logging.getLogger(n) for n in (__name__, "mcp")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        with McpHub(home) as hub:
            return hub.status(names, connect=True)
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)


def doctor_checks(home: Home) -> list[Check]:
    """`anima doctor`: each configured server starts and lists its tools (within its timeout);
    a config that cannot work is named with the file to fix."""
    from anima.doctor import Check

    checks = []
    for row in survey(home):
        what = f"mcp {row.name}"
        if row.transport == "-":
            checks.append(Check(what, False, row.error, "fix the [mcp.NAME] table it names"))
        elif row.state == "running":
            checks.append(Check(what, True, f"{row.transport}: {len(row.tools)} tool(s)"))
        else:
            where = f"; its stderr is in {row.log}" if row.log else ""
            checks.append(
                Check(
                    what,
                    False,
                    f"{row.transport} {row.target}: {row.error}",
                    f"check the server's command or url and its variables{where}",
                    level="warn",
                )
            )
    return checks
