"""propose: the agent asks to change itself (persona, always.md, skills, some agent.toml keys).

The change becomes a commit on the branch `proposals/<id>` of its repository, checked, for a
person to approve or reject (anima/proposals.py); nothing the agent runs on changes now. The
turn's commit on main names the proposal and its reason."""

from __future__ import annotations

from typing import Any

from anima.errors import BadProposal, ToolError
from anima.tools.base import PROPOSED, ToolContext, tool


@tool()
def propose(
    ctx: ToolContext,
    reason: str,
    files: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    summary: str = "",
) -> str:
    """Propose a change to yourself for your owner to review: persona.md, always.md, your
    skills (skills/NAME/SKILL.md and its scripts/references) or agent.toml keys (model,
    provider, fallback, reflection.at, heartbeat.*, budget.*, autonomy.*). Nothing changes until
    it is approved; you get the proposal's id and the result of its checks.

    Args:
        reason: why this change makes you better; required, shown to the reviewer and committed
        files: path -> the file's whole new text (null deletes it), e.g. {"always.md": "..."}
        config: dotted agent.toml key -> new value (null unsets it), e.g. {"heartbeat.every": "2h"}
        summary: a short title for the change
    """
    from anima import proposals
    from anima.agent import Agent
    from anima.home import Home

    if not reason.strip():
        raise ToolError("reason is required: say why, it goes to the reviewer and the commit")
    agent = Agent(Home(ctx.agent_dir.parent.parent), ctx.agent_name)
    try:
        p = proposals.create(
            agent, reason, files=files, config=config, summary=summary, by=ctx.agent_name
        )
    except BadProposal as exc:
        raise ToolError(str(exc)) from None
    except UnicodeEncodeError:
        raise ToolError("the proposed text is not valid UTF-8") from None
    ctx.reasons.append(f"{PROPOSED}{p.id} ({', '.join(p.files)}): {p.reason[:300]}")
    if p.passed:
        return f"proposal {p.id} filed ({', '.join(p.files)}); its checks passed. It waits for approval."
    problems = "\n".join(f"- {x}" for x in p.problems)
    return (
        f"proposal {p.id} filed ({', '.join(p.files)}) but its checks FAILED; it cannot be "
        f"approved as is:\n{problems}\nPropose a corrected version."
    )
