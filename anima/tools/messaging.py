"""send_message: write an outbox record to another agent or a channel address."""

from __future__ import annotations

import re

from anima.errors import BadMessage, ToolError
from anima.home import Home
from anima.message import Message, parse, render
from anima.peer import split_address
from anima.tools.base import ToolContext, tool

_CHANNEL_ADDR = re.compile(r"^[a-z][a-z0-9_-]{0,62}:[^\s]{1,200}$")
"""`channel:address`, the channel an instance name (`telegram`, `hooks-2`)."""


@tool()
def send_message(ctx: ToolContext, to: str, text: str) -> str:
    """Send a message to another agent (by name, or name@peer for an agent of another home),
    to every other agent ("all"), or to a channel address such as "telegram:12345". The reply,
    if any, arrives later in your inbox.

    Args:
        to: an agent name, agent@peer, "all", or channel:address
        text: the message, Markdown
    """
    to = to.strip().lstrip("@")
    if not text.strip():
        raise ToolError("text is empty")
    if _CHANNEL_ADDR.match(to):
        channel = to.split(":", 1)[0]
    elif (remote := split_address(to)) is not None:
        peers = Home(ctx.agent_dir.parent.parent).config().peers
        if remote[1] not in peers:
            known = ", ".join(sorted(peers)) or "none configured"
            raise ToolError(f"no peer named {remote[1]!r} (peers: {known})")
        channel = "agent"
    elif to == "all" or to in ctx.known_agents:
        if to == ctx.agent_name:
            raise ToolError("you cannot send a message to yourself")
        channel = "agent"
    else:
        known = ", ".join(a for a in ctx.known_agents if a != ctx.agent_name) or "none"
        raise ToolError(f"no agent named {to!r}; known agents: {known}; or use channel:address")
    msg = Message.create(
        sender=ctx.agent_name,
        to=to,
        body=text,
        channel=channel,
        conversation=ctx.conversation
        if channel != "agent"
        else f"{ctx.agent_name}-{to.replace('@', '-at-')}"
        if to != "all"
        else ctx.conversation,
    )
    try:  # what the recipient's intake would refuse is refused here, where the model can fix it
        parse(render(msg).encode("utf-8"), fallback_id=msg.id, default_to=to)
    except BadMessage as exc:
        raise ToolError(f"this message cannot be sent: {exc}") from None
    ctx.outgoing.append(msg)
    return f"queued message {msg.id} to {to}; it is sent when this turn is committed"
