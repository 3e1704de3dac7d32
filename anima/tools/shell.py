"""shell: off unless agent.toml enables it; runs in the workspace with a timeout and an output cap."""

from __future__ import annotations

import os
import signal
import subprocess

from anima.config import AgentConfig
from anima.errors import ToolError
from anima.tools.base import ToolContext, tool


def _enabled(config: AgentConfig) -> bool:
    return config.tools.shell.enabled


@tool(enabled=_enabled)
def shell(ctx: ToolContext, command: str) -> str:
    """Run a shell command (bash) in your workspace and return its exit code and output.

    Args:
        command: the command line
    """
    policy = ctx.config.tools.shell
    if not policy.enabled:  # belt and braces: the tool is not offered when disabled
        raise ToolError("shell access is disabled for this agent")
    env = {
        k: v
        for k, v in os.environ.items()
        if "KEY" not in k and "TOKEN" not in k and "SECRET" not in k and "PASSWORD" not in k
    }
    proc = subprocess.Popen(
        ["bash", "-c", command],
        cwd=ctx.workspace,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=policy.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise ToolError(
            f"command timed out after {policy.timeout:g}s; output so far:\n"
            + out.decode("utf-8", "replace")[: policy.output_chars]
        ) from None
    text = out.decode("utf-8", "replace")
    if len(text) > policy.output_chars:
        text = text[: policy.output_chars] + f"\n[output cut at {policy.output_chars} characters]"
    ctx.touched.add("workspace")
    return f"exit code {proc.returncode}\n{text}"
