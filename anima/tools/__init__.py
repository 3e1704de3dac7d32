"""Tools an agent can call: files, http, shell, memory, messaging."""

from anima.tools.base import Tool, ToolContext, available, registry, run_tool, tool

__all__ = ["Tool", "ToolContext", "available", "registry", "run_tool", "tool"]
