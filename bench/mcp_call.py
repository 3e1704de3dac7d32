"""MCP call overhead with a warm session: what a tool call through Anima's hub costs on top of the
server's own time.

Both sides call the echo tool of tests/mcp_servers/echo_server.py over stdio, N times each, in
interleaved rounds (so a busy machine slows both alike):
- direct: the `mcp` SDK's ClientSession, timed inside its own event loop (the SDK and the
  server only: the baseline);
- hub: `McpTool.run` from a plain thread, as a turn calls it (the hub's loop thread, the
  session, result rendering and redaction).
Overhead = median(hub) - median(direct). Target (issue 14): <= 5 ms.

    .venv/bin/python bench/mcp_call.py [N]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time
from typing import Any

from _common import ROOT, make_home, summary

from anima.agent import Agent
from anima.mcp_client import McpHub

TARGET_MS = 5.0
ECHO = ROOT / "tests" / "mcp_servers" / "echo_server.py"


class DirectClient:
    """The SDK alone: one ClientSession on a loop in its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self._stop = asyncio.Event()
        self._ready: asyncio.Future[Any] = asyncio.run_coroutine_threadsafe(
            self._open(), self.loop
        ).result(60)

    async def _open(self) -> Any:
        from mcp import ClientSession, StdioServerParameters, stdio_client

        ready: asyncio.Future[Any] = self.loop.create_future()

        async def hold() -> None:
            params = StdioServerParameters(command=sys.executable, args=[str(ECHO), "stdio"])
            async with (
                stdio_client(params, errlog=open("/dev/null", "w")) as (r, w),  # noqa: SIM115
                ClientSession(r, w) as session,
            ):
                await session.initialize()
                ready.set_result(session)
                await self._stop.wait()

        self.task = self.loop.create_task(hold())
        return await ready

    def call(self, text: str) -> float:
        """Timed inside the loop: no thread hop, the SDK and the server only."""

        async def timed() -> float:
            t0 = time.perf_counter()
            result = await self._ready.call_tool("echo", {"text": text})
            assert result.content[0].text == text
            return (time.perf_counter() - t0) * 1000

        return asyncio.run_coroutine_threadsafe(timed(), self.loop).result(30)

    async def _close(self) -> None:
        self._stop.set()
        await self.task

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)


def main(n: int) -> None:
    home = make_home(1, "http://127.0.0.1:9")
    with home.config_path.open("a") as fh:
        fh.write(f'\n[mcp.srv]\ncommand = "{sys.executable}"\nargs = ["{ECHO}", "stdio"]\n')
    agent = Agent(home, "a000")
    direct = DirectClient()
    with McpHub(home) as hub:
        t0 = time.perf_counter()
        tools = {t.name: t for t in hub.tools(agent)}
        start_ms = (time.perf_counter() - t0) * 1000
        echo = tools["srv__echo"]

        def via_hub(text: str) -> float:
            t0 = time.perf_counter()
            assert echo.run(None, {"text": text}) == text  # type: ignore[arg-type]
            return (time.perf_counter() - t0) * 1000

        t0 = time.perf_counter()
        hub.tools(agent)
        listing_ms = (time.perf_counter() - t0) * 1000
        for i in range(20):  # warm both
            direct.call(f"w{i}")
            via_hub(f"w{i}")
        direct_ms: list[float] = []
        hub_ms: list[float] = []
        for i in range(n):
            direct_ms.append(direct.call(f"hello {i}"))
            hub_ms.append(via_hub(f"hello {i}"))
    direct.close()
    overhead = statistics.median(hub_ms) - statistics.median(direct_ms)
    print(f"first listing (server start + initialize + tools/list): {start_ms:.0f} ms")
    print(f"warm listing at a turn's start (cached): {listing_ms:.2f} ms")
    print(summary("direct SDK call (echo over stdio)", direct_ms))
    print(summary("hub call (McpTool.run from a thread)", hub_ms))
    verdict = "ok" if overhead <= TARGET_MS else "OVER TARGET"
    print(f"overhead per call: {overhead:.2f} ms (median; target <= {TARGET_MS} ms: {verdict})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
