"""shell: off unless agent.toml enables it; runs in the workspace inside a bubblewrap sandbox
(see anima/tools/sandbox.py), with a timeout that kills the whole command and an output cap.
Without a sandbox it runs only when `[tools.shell] unsafe = true` says so."""

from __future__ import annotations

from pathlib import Path

from anima.config import AgentConfig
from anima.errors import ToolError
from anima.tools import sandbox
from anima.tools.base import ToolContext, tool
from anima.tools.files import sweep_git_names


def _enabled(config: AgentConfig) -> bool:
    return config.tools.shell.enabled


def _refusal(config: AgentConfig) -> str | None:
    return sandbox.refusal(config.tools.shell.unsafe)


def _hidden(ctx: ToolContext) -> list[Path]:
    """What a command may not see: every agent and credential, the user's home, scratch space."""
    return [ctx.agent_dir.parent.parent, ctx.agent_dir, Path.home(), Path("/tmp"), Path("/run")]


@tool(enabled=_enabled, refusal=_refusal)
def shell(ctx: ToolContext, command: str) -> str:
    """Run a shell command (bash) in your workspace and return its exit code and output. It runs
    in a sandbox: only your workspace is writable, and there is no network unless allowed.

    Args:
        command: the command line
    """
    policy = ctx.config.tools.shell
    if not policy.enabled:  # belt and braces: the tool is not offered when disabled
        raise ToolError("shell access is disabled for this agent")
    if "\x00" in command:
        raise ToolError("the command contains a NUL byte")
    why = sandbox.refusal(policy.unsafe)
    if why:
        raise ToolError(why)
    workspace = ctx.workspace
    if workspace.is_symlink() or not workspace.is_dir():
        raise ToolError("your workspace/ folder is missing or a symlink; shell runs only inside it")
    argv = ["bash", "-c", command]
    if sandbox.unavailable() is None:
        from anima.skills import sandbox_binds

        argv = sandbox.command(
            argv,
            workspace=ctx.workspace,
            hidden=_hidden(ctx),
            network=policy.network,
            read_only=sandbox_binds(ctx.agent_dir),
        )
    max_bytes = policy.output_chars * 4  # UTF-8: at most 4 bytes a character
    ctx.touched.add("workspace")  # before it runs: the turn record keeps what it was like
    done = sandbox.run(
        argv,
        cwd=ctx.workspace,
        env=sandbox.minimal_env(ctx.workspace.resolve()),
        timeout=policy.timeout,
        max_bytes=max_bytes,
        cancel=ctx.cancel,
    )
    text = done.output.decode("utf-8", "replace")
    if done.cut or len(text) > policy.output_chars:
        text = text[: policy.output_chars] + f"\n[output cut at {policy.output_chars} characters]"
    removed = sweep_git_names(ctx.workspace)
    if removed:
        text += (
            f"\n[removed {', '.join(removed[:10])}: git's own files cannot be kept in your "
            "workspace, which is committed to a git repository]"
        )
    if done.returncode is None:
        raise ToolError(
            f"command timed out after {policy.timeout:g}s and was killed; output so far:\n{text}"
        )
    return f"exit code {done.returncode}\n{text}"
