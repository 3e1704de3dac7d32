"""An MCP server for the tests: `python echo_server.py stdio` or `python echo_server.py http`
(binds 127.0.0.1 on a free port and prints `port N` once it listens).

Its tools cover what a client must handle: plain text, an error result, non-text content, a
tool that hangs, one that kills the server mid-call, and a tool list that changes."""

from __future__ import annotations

import asyncio
import os
import socket
import sys

from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("echo")


@server.tool()
def echo(text: str) -> str:
    """Say `text` back."""
    return text


@server.tool()
def add(a: int, b: int) -> str:
    """Add two integers."""
    return str(a + b)


@server.tool()
def fail(why: str = "it failed") -> str:
    """Always fails, with an error result."""
    raise ToolError(why)


@server.tool()
def env(name: str) -> str:
    """The value of an environment variable in the server ("<unset>" if absent)."""
    return os.environ.get(name, "<unset>")


@server.tool()
def session_id() -> str:
    """The server's POSIX session id, to show it runs in its own session."""
    return str(os.getsid(0))


@server.tool()
def picture() -> Image:
    """A tiny PNG: non-text content."""
    return Image(data=b"\x89PNG\r\n\x1a\n" + b"\0" * 16, format="png")


@server.tool()
async def hang(seconds: float = 3600.0) -> str:
    """Answer only after `seconds` (a hung server, for timeouts)."""
    await asyncio.sleep(seconds)
    return "woke up"


@server.tool()
def exit_now() -> str:
    """Kill the server mid-call: the client sees its connection close."""
    sys.stderr.flush()
    os._exit(3)


@server.tool()
async def grow(ctx: Context) -> str:
    """Add a tool `extra` and tell the client its tool list changed."""

    def extra() -> str:
        """A tool that appeared later."""
        return "extra here"

    server.add_tool(extra)
    await ctx.session.send_tool_list_changed()
    return "grown"


@server.tool(name="bad name!")
def bad_name() -> str:
    """A tool whose name no model provider accepts as is."""
    return "renamed ok"


def serve_http() -> None:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    print(f"port {sock.getsockname()[1]}", flush=True)
    app = server.streamable_http_app()
    config = uvicorn.Config(app, log_level="warning")
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    print(f"echo server starting ({sys.argv[1]})", file=sys.stderr, flush=True)
    if sys.argv[1] == "http":
        serve_http()
    else:
        server.run("stdio")
