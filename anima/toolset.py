"""A turn's toolset, composed from tool sources: the built-in tools, MCP servers, skills.

The runtime owns the sources (an MCP source keeps live sessions across turns) and hands each turn
the tools for its agent; the turn itself never decides where tools come from. A source that fails
to list its tools costs the turn those tools only (logged), never the turn.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from anima.skills import SkillSource
from anima.tools.base import Tool, available

if TYPE_CHECKING:
    from anima.agent import Agent
    from anima.home import Home

log = logging.getLogger(__name__)


class ToolSource(Protocol):
    """Something that offers tools to an agent's turns."""

    name: str

    def tools(self, agent: Agent) -> list[Tool]:
        """The tools this source offers `agent` now. Raise only for the agent's config errors
        (BadConfig); anything else is logged and the source is skipped for this turn."""
        ...


class BuiltinTools:
    """The tools of anima/tools/, filtered by the agent's tool policy."""

    name = "builtin"

    def tools(self, agent: Agent) -> list[Tool]:
        return available(agent.config)


def compose(agent: Agent, sources: Sequence[ToolSource]) -> dict[str, Tool]:
    """The agent's toolset by name. Earlier sources win a name clash (built-ins first), so a
    server cannot shadow a built-in tool."""
    from anima.errors import BadConfig

    out: dict[str, Tool] = {}
    for source in sources:
        try:
            offered = source.tools(agent)
        except BadConfig:
            raise
        except Exception as exc:  # a dead server must not cost the turn its other tools
            log.warning("%s: tools of %s unavailable this turn: %s", agent.name, source.name, exc)
            continue
        for t in offered:
            if t.name in out:
                log.warning(
                    "%s: %s offers %r again; the first is kept", agent.name, source.name, t.name
                )
                continue
            out[t.name] = t
    return out


DEFAULT_SOURCES: tuple[ToolSource, ...] = (BuiltinTools(), SkillSource())
"""The sources that need no process of their own: built-ins and the agent's skills."""


@contextlib.contextmanager
def open_sources(home: Home) -> Iterator[list[ToolSource]]:
    """Every source, MCP servers included, for as long as the caller runs turns (the runtime's
    whole life, or one `run --once`); the servers it started are stopped at the end."""
    from anima.mcp_client import McpHub

    hub = McpHub(home)
    try:
        yield [*DEFAULT_SOURCES, hub]
    finally:
        hub.close()
